package agent

import "errors"

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrNotJoined is returned by Serve when the data directory holds no
	// usable host certificate and no join token was given.
	ErrNotJoined = errors.New("agent: host has not joined the CA: pass a join token (sshward-ca join-token)")
	// ErrTierMismatch is returned by Serve when the data directory was
	// joined for another tier than Config.Tier.
	ErrTierMismatch = errors.New("agent: data directory belongs to another tier")
	// ErrServerClosed is returned by Serve after its context ended.
	ErrServerClosed = errors.New("agent: server closed")
)

var (
	// errPayload marks a malformed request payload; the request is
	// answered with failure.
	errPayload = errors.New("agent: malformed request payload")
	// errNoSuchUser is returned by LookupUser for an unknown account.
	errNoSuchUser = errors.New("agent: no such local user")
	// errSingleUseSeen is returned when a single-use serial is spent.
	errSingleUseSeen = errors.New("agent: single-use certificate already used")
)

// Causes a session ends with (context.Cause of the session context). Each
// has a message for the user, see endMessage, and an exit status, see
// endStatus.
var (
	ErrCertExpired     = errors.New("agent: certificate expired")
	ErrCertRevoked     = errors.New("agent: certificate revoked")
	ErrRecordingFailed = errors.New("agent: session recording failed")
	// ErrTerminated ends a session an auditor terminated (terminate.go);
	// the cause carries who and why as its notice.
	ErrTerminated = errors.New("agent: session terminated by an auditor")
	// ErrShuttingDown ends the sessions of an agent that stops (SIGTERM,
	// SIGINT, or Serve's context ending without ErrRestarting as cause).
	ErrShuttingDown = errors.New("agent: host agent stopped")
	// ErrRestarting ends the sessions of an agent that restarts (SIGHUP):
	// cancel Serve's context with it as the cause.
	ErrRestarting = errors.New("agent: host agent restarting")
	// errClientGone ends a session whose connection closed; no one is left
	// to read a message.
	errClientGone = errors.New("agent: client connection closed")
)

// Exit statuses of sessions the agent ends (sent as exit-status, RFC 4254
// section 6.10, so that `ssh` exits with them instead of 255). Like ssh's
// own 255 they sit at the top of the range, above every 128+signal status a
// shell reports, so that a script tells "the host ended my session, for
// this reason" from its command's own failure.
const (
	ExitCertExpired     = 250 // certificate expired: get a new one and reconnect
	ExitCertRevoked     = 251 // certificate revoked
	ExitRecordingFailed = 252 // the tier requires recording and it failed
	ExitAgentStopped    = 253 // the host agent stopped or restarts: reconnect later
	ExitTerminated      = 249 // an auditor ended the session
	// ExitRefused is the status of a session refused at its start for
	// another reason (it cannot be set up on this host).
	ExitRefused = 1
)

// endCauses say, for each cause the agent ends sessions with, the short
// reason kept in the recording and the audit log, what the user reads (what
// happened and how to go on, nothing internal), the exit status, and
// whether the recording is cut short (complete=false with the reason).
var endCauses = []struct {
	err             error
	reason, message string
	status          uint32
	cut             bool
}{
	{ErrCertExpired, "certificate expired", "your certificate expired. Get a new one with `sshward cert` and reconnect.", ExitCertExpired, false},
	{ErrCertRevoked, "certificate revoked", "your certificate was revoked.", ExitCertRevoked, false},
	{ErrTerminated, "terminated by an auditor", "an auditor ended it.", ExitTerminated, false},
	{ErrRecordingFailed, "recording failed", "this host cannot record sessions right now, and its tier requires recording.", ExitRecordingFailed, false},
	{ErrRestarting, "agent restarted", "the host agent is restarting. Reconnect in a moment.", ExitAgentStopped, true},
	{ErrShuttingDown, "agent stopped", "the host agent stopped. Reconnect once it is back, or ask an administrator.", ExitAgentStopped, true},
	{errClientGone, "client disconnected", "", 0, false},
}

// endMessage is what the user reads when the agent ends a session.
func endMessage(cause error) string {
	if n := noticeOf(cause); n != "" {
		return "sshward: session ended: " + n
	}
	for _, c := range endCauses {
		if errors.Is(cause, c.err) && c.message != "" {
			return "sshward: session ended: " + c.message
		}
	}
	return "sshward: session ended."
}

// endReason is the short reason for the recording and the audit log.
func endReason(cause error) string {
	if cause == nil {
		return ""
	}
	if n := noticeOf(cause); n != "" && errors.Is(cause, ErrTerminated) {
		return n // who ended it and why, for the recording and the audit
	}
	for _, c := range endCauses {
		if errors.Is(cause, c.err) {
			return c.reason
		}
	}
	return cause.Error()
}

// endStatus is the exit status a session ended by the agent with cause
// reports; false for a cause that has none (the client left).
func endStatus(cause error) (uint32, bool) {
	for _, c := range endCauses {
		if errors.Is(cause, c.err) {
			return c.status, c.status != 0
		}
	}
	return ExitRefused, cause != nil
}

// endCut reports whether cause cuts the session's recording short: the
// session did not end by itself or by a decision about it, so the
// recording says complete=false with the reason.
func endCut(cause error) bool {
	for _, c := range endCauses {
		if errors.Is(cause, c.err) {
			return c.cut
		}
	}
	return false
}
