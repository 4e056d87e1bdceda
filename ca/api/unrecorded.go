package api

import (
	"errors"
	"net/url"
	"time"
	"unicode/utf8"
)

// An open tier's unrecorded session (DESIGN.md "Recording": a tier with
// on_recording_failure open lets a session go on when recording fails, and
// raises an alert). The host agent reports it, with its host certificate
// (ca/hostauth), to the CA's audit log and to the playback server's, and
// retries each until it answered: a report is queued durably on the host.
//
//	POST /v1/host/unrecorded            UnrecordedSession (host) -> UnrecordedReceived   (CA)
//	POST /v1/ingest/{id}/unrecorded     UnrecordedSession (host) -> UnrecordedReceived   (playback)
//
// Delivery is at least once: a report whose answer was lost is sent again,
// with the same EventID, and may be recorded twice.
const PathHostUnrecorded = "/v1/host/unrecorded"

// EventSessionUnrecorded is the audit event type of such a report, in the
// CA's audit log and the playback server's.
const EventSessionUnrecorded = "session.unrecorded"

// PlaybackUnrecordedPath is the playback server's path for a report about
// session id (under the ingest API, recorder.IngestPathPrefix).
func PlaybackUnrecordedPath(sessionID string) string {
	return "/v1/ingest/" + url.PathEscape(sessionID) + "/unrecorded"
}

// Phases of an unrecorded session (UnrecordedSession.Phase).
const (
	// UnrecordedAtStart: the recording could not be created; nothing of
	// the session is recorded.
	UnrecordedAtStart = "start"
	// UnrecordedDuring: recording failed while the session ran; what came
	// before is recorded, the rest is not.
	UnrecordedDuring = "during"
	// UnrecordedAtEnd: the session's recording could not be finished.
	UnrecordedAtEnd = "end"
	// UnrecordedDropped: the recorder could not keep up and part of the
	// output is missing from the recording; markers in the cast say where
	// and how much (the tier fails open, so the session was not slowed).
	UnrecordedDropped = "dropped"
)

// UnrecordedSession reports a session that runs (or ran) unrecorded. The
// host fills every field; receivers record who sent it from the host
// certificate, not from Host.
type UnrecordedSession struct {
	// EventID is random and unique per report: a repeat has the same.
	EventID   string `json:"event_id"`
	SessionID string `json:"session_id"`
	// Identity is the user (the certificate's identity, e.g. alice@local);
	// Principal the account logged into.
	Identity   string `json:"identity,omitempty"`
	Principal  string `json:"principal"`
	Host       string `json:"host"`
	Tier       string `json:"tier"`
	Serial     uint64 `json:"serial,omitempty"`
	KeyID      string `json:"key_id,omitempty"`
	ClientAddr string `json:"client_addr,omitempty"`
	// Command is what the session runs (secrets redacted), "" for a shell.
	Command string `json:"command,omitempty"`
	Phase   string `json:"phase"`
	// Reason is the short reason the user was shown ("the recording disk
	// is full"); Error the agent's error, for operators.
	Reason string    `json:"reason"`
	Error  string    `json:"error,omitempty"`
	At     time.Time `json:"at"`
}

// Check names the first bad field.
func (u *UnrecordedSession) Check() error {
	for _, f := range []struct {
		name, v  string
		required bool
		max      int
	}{
		{"event_id", u.EventID, true, 64},
		{"session_id", u.SessionID, true, 256},
		{"identity", u.Identity, false, 512},
		{"principal", u.Principal, true, 256},
		{"host", u.Host, false, 256},
		{"tier", u.Tier, true, 64},
		{"key_id", u.KeyID, false, 1024},
		{"client_addr", u.ClientAddr, false, 256},
		{"command", u.Command, false, 4096},
		{"reason", u.Reason, true, 512},
		{"error", u.Error, false, 2048},
	} {
		switch {
		case f.required && f.v == "":
			return errors.New(f.name + " is required")
		case len(f.v) > f.max || !utf8.ValidString(f.v):
			return errors.New(f.name + " is too long or not UTF-8")
		}
	}
	switch u.Phase {
	case UnrecordedAtStart, UnrecordedDuring, UnrecordedAtEnd, UnrecordedDropped:
	default:
		return errors.New("phase must be start, during, end or dropped")
	}
	if u.At.IsZero() {
		return errors.New("at is required")
	}
	return nil
}

// UnrecordedReceived answers a report that was recorded.
type UnrecordedReceived struct {
	EventID string `json:"event_id"`
}
