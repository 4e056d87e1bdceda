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
// has a message for the user, see endMessage.
var (
	ErrCertExpired     = errors.New("agent: certificate expired")
	ErrCertRevoked     = errors.New("agent: certificate revoked")
	ErrRecordingFailed = errors.New("agent: session recording failed")
	ErrShuttingDown    = errors.New("agent: host agent shutting down")
	// errClientGone ends a session whose connection closed; no one is left
	// to read a message.
	errClientGone = errors.New("agent: client connection closed")
)

// endCauses say, for each cause the agent ends sessions with, the short
// reason kept in the recording and the audit log, and what the user reads:
// what happened and how to go on, nothing internal.
var endCauses = []struct {
	err             error
	reason, message string
}{
	{ErrCertExpired, "certificate expired", "your certificate expired. Get a new one with `sshward cert` and reconnect."},
	{ErrCertRevoked, "certificate revoked", "your certificate was revoked."},
	{ErrRecordingFailed, "recording failed", "this host cannot record sessions right now, and its tier requires recording."},
	{ErrShuttingDown, "agent shutting down", "the host agent is shutting down."},
	{errClientGone, "client disconnected", ""},
}

// endMessage is what the user reads when the agent ends a session.
func endMessage(cause error) string {
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
	for _, c := range endCauses {
		if errors.Is(cause, c.err) {
			return c.reason
		}
	}
	return cause.Error()
}
