package plugins

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors from this package wrap at most one of them; test
// with errors.Is.
var (
	// ErrChecksum: the plugin binary's SHA-256 is not the one pinned in the
	// configuration. The plugin is not run.
	ErrChecksum = errors.New("plugin binary checksum mismatch")
	// ErrUnavailable: the plugin process is not running or stopped
	// answering (crashed, killed, hung past its timeout, or it could not be
	// restarted yet). The host restarts it on a later call, after a bounded
	// backoff. Approval callers must treat this as a denial (fail closed).
	ErrUnavailable = errors.New("plugin unavailable")
	// ErrPlugin: the plugin ran and returned an error of its own (a webhook
	// receiver said no, a schedule file did not parse). The process is kept.
	ErrPlugin = errors.New("plugin returned an error")
	// ErrProtocol: the plugin answered something the host cannot accept (bad
	// JSON, a negative approval count, an oversized reason).
	ErrProtocol = errors.New("plugin answered outside the protocol")
	// ErrWrongKind: the method does not belong to the plugin's Kind (Review
	// on a notifier, or the reverse).
	ErrWrongKind = errors.New("plugin is of another kind")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("plugin client closed")
)

// Error is what the host-side Client returns for a failed call: which
// plugin, which operation, and why. Err wraps one of the sentinels above
// (and, for ErrUnavailable, the transport or start error).
type Error struct {
	Plugin string // Config.Name
	Op     string // "start", "notify" or "review"
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("plugins: %s: %s: %v", e.Plugin, e.Op, e.Err) }
func (e *Error) Unwrap() error { return e.Err }
