package api

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// Suspicious-activity flags (issue 13 §2). A tier's policy lists rules
// (policy key flags:, api.DefaultFlagRules when the key is left out); the
// CA sends its agents their tier's rules on every revocation stream it
// opens (the hello event's Flags), and the agent evaluates them as each
// session runs:
//
//   - exec: the command line of `ssh host CMD` (before it runs);
//   - input: each line typed at a terminal, rebuilt from the keystrokes
//     (backspace, ^U, ^W, ^C), where the tier records input;
//   - output: each line the session prints;
//   - bytes_out: the bytes sent to the client, over OverBytes.
//
// Action flag puts a marker in the recording ("flag RULE: …"), audits the
// hit and alerts; deny also refuses an exec command with the rule's
// message before anything runs. Typed commands are only flagged, whatever
// the action: a shell can be made to run anything without a line that
// matches (aliases, variables, scripts, base64), so refusing keystrokes
// would give a false sense of safety.

// Where a rule looks (FlagRule.On).
const (
	FlagOnExec     = "exec"
	FlagOnInput    = "input"
	FlagOnOutput   = "output"
	FlagOnBytesOut = "bytes_out"
)

// Actions of a rule.
const (
	FlagActionFlag = "flag"
	FlagActionDeny = "deny"
)

// FlagRule is one suspicious-activity rule.
type FlagRule struct {
	Name string   `json:"name"`
	On   []string `json:"on"`
	// Match is an RE2 regular expression (Go regexp) a command line,
	// typed line or output line is matched against (not bytes_out).
	Match string `json:"match,omitempty"`
	// OverBytes is the bytes_out threshold.
	OverBytes int64 `json:"over_bytes,omitempty"`
	// Action is flag or deny (deny refuses exec commands; elsewhere it
	// flags).
	Action string `json:"action"`
	// Message is what a refused user reads, and the flag's description.
	Message string `json:"message,omitempty"`
}

// MaxFlagRules bounds the rules of a tier.
const MaxFlagRules = 200

// Check validates a rule.
func (r *FlagRule) Check() error {
	if r.Name == "" || len(r.Name) > 64 {
		return errors.New("a flag rule needs a name of at most 64 characters")
	}
	if len(r.On) == 0 {
		return fmt.Errorf("flag rule %s: on must list where it looks: exec, input, output or bytes_out", r.Name)
	}
	for _, on := range r.On {
		switch on {
		case FlagOnExec, FlagOnInput, FlagOnOutput:
			if r.Match == "" {
				return fmt.Errorf("flag rule %s: on %s needs match: a regular expression", r.Name, on)
			}
		case FlagOnBytesOut:
			if r.OverBytes <= 0 {
				return fmt.Errorf("flag rule %s: on bytes_out needs over: a size such as 50MB", r.Name)
			}
		default:
			return fmt.Errorf("flag rule %s: unknown on %q: expected exec, input, output or bytes_out", r.Name, on)
		}
	}
	if r.Match != "" {
		if len(r.Match) > 1024 {
			return fmt.Errorf("flag rule %s: match is too long", r.Name)
		}
		if _, err := regexp.Compile(r.Match); err != nil {
			return fmt.Errorf("flag rule %s: match is not a valid regular expression: %v", r.Name, err)
		}
	}
	if r.Action != FlagActionFlag && r.Action != FlagActionDeny {
		return fmt.Errorf("flag rule %s: action must be flag or deny, not %q", r.Name, r.Action)
	}
	if len(r.Message) > 300 {
		return fmt.Errorf("flag rule %s: message is too long", r.Name)
	}
	return nil
}

// Looks reports whether the rule looks at on.
func (r *FlagRule) Looks(on string) bool { return slices.Contains(r.On, on) }

// DefaultDownloadFlagBytes is the default rule's bytes_out threshold.
const DefaultDownloadFlagBytes = 50 << 20

// DefaultFlagRules are the rules of a tier whose policy has no flags: key.
func DefaultFlagRules() []FlagRule {
	return []FlagRule{
		{Name: "rm-rf-root", On: []string{FlagOnExec, FlagOnInput}, Action: FlagActionDeny,
			Match:   `\brm\s+(?:-\S+\s+)*-[A-Za-z]*[rR][A-Za-z]*\s+(?:-\S+\s+)*/\*?(?:[\s;&|)]|$)`,
			Message: "recursive delete of the root file system"},
		{Name: "recursive-force-delete", On: []string{FlagOnExec, FlagOnInput}, Action: FlagActionFlag,
			Match:   `\brm\s+(?:-\S+\s+)*-[A-Za-z]*(?:[rR][A-Za-z]*f|f[A-Za-z]*[rR])`,
			Message: "recursive forced delete"},
		{Name: "drop-table", On: []string{FlagOnExec, FlagOnInput}, Action: FlagActionFlag,
			Match:   `(?i)\bdrop\s+(?:table|database|schema)\b`,
			Message: "SQL DROP of a table or database"},
		{Name: "curl-pipe-shell", On: []string{FlagOnExec, FlagOnInput}, Action: FlagActionDeny,
			Match:   `\b(?:curl|wget|fetch)\b[^|]*\|\s*(?:sudo\s+(?:-\S+\s+)*)?(?:ba|da|z|k|fi)?sh\b`,
			Message: "downloaded code piped into a shell"},
		{Name: "sudoers-edit", On: []string{FlagOnExec, FlagOnInput}, Action: FlagActionFlag,
			Match:   `\bvisudo\b|/etc/sudoers`,
			Message: "edit of the sudoers configuration"},
		{Name: "private-key-output", On: []string{FlagOnOutput}, Action: FlagActionFlag,
			Match:   `-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----`,
			Message: "a private key was printed"},
		{Name: "large-download", On: []string{FlagOnBytesOut}, Action: FlagActionFlag,
			OverBytes: DefaultDownloadFlagBytes,
			Message:   "more than 50 MB sent to the client"},
	}
}

// FlagRuleSet carries a tier's rules (an empty Rules: none).
type FlagRuleSet struct {
	Rules []FlagRule `json:"rules"`
}

// Flag reports (host → CA): each hit an agent raises is also reported to
// the CA, which writes it to its audit log (EventSessionFlagged), where
// the notifier plugins get it like every audit event:
//
//	POST /v1/host/flags   FlagReport -> {}   (host certificate)
const PathHostFlags = "/v1/host/flags"

// EventSessionFlagged is the CA audit event of a flag an agent raised.
const EventSessionFlagged = "session.flagged"

// FlagReport is one flag raised by an agent.
type FlagReport struct {
	SessionID string    `json:"session_id"`
	Rule      string    `json:"rule"`
	Action    string    `json:"action"` // flag, or deny when an exec was refused
	On        string    `json:"on"`
	Message   string    `json:"message,omitempty"`
	Text      string    `json:"text,omitempty"` // the line, redacted by the agent
	Tier      string    `json:"tier"`
	Serial    uint64    `json:"serial"`
	KeyID     string    `json:"key_id,omitempty"`
	Identity  string    `json:"identity,omitempty"`
	Principal string    `json:"principal,omitempty"`
	At        time.Time `json:"at"`
}

// Check validates the shape of a report.
func (r *FlagReport) Check() error {
	switch {
	case r.SessionID == "" || len(r.SessionID) > 128:
		return errors.New("session_id is required")
	case r.Rule == "" || len(r.Rule) > 64:
		return errors.New("rule is required")
	case r.Tier == "" || len(r.Tier) > 64:
		return errors.New("tier is required")
	case len(r.Text) > 1024 || len(r.Message) > 300 || len(r.KeyID) > 512 || len(r.Identity) > 256 || len(r.Principal) > 256 ||
		len(r.Action) > 16 || len(r.On) > 16:
		return errors.New("a field is too long")
	}
	return nil
}
