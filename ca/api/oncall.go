package api

import (
	"strings"
	"time"
)

// ExtOnCallUntil marks a certificate granted because its holder is on call
// (a tier with requires_oncall, or approvals waived for the person on call):
// its value is the end of the holder's shift, RFC 3339 in UTC. The
// certificate expires then at the latest, and the CA revokes it when the
// shift ends; the agent uses it to tell the user why the session ended.
const ExtOnCallUntil = "oncall-until@sshward"

// OnCallEndedMessage is what a user reads when a session ends with the
// on-call shift that granted it: one sentence, the fix included.
func OnCallEndedMessage(end time.Time) string {
	return "your on-call shift ended at " + end.UTC().Format("2006-01-02 15:04 UTC") +
		", and the access it granted ended with it: ask whoever is on call now, or request access with `sshward request`."
}

// ParseOnCallUntil reads an ExtOnCallUntil value.
func ParseOnCallUntil(v string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
	return t, err == nil
}
