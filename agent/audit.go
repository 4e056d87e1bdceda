package agent

import (
	"context"
	"log/slog"
	"time"
)

// Audit actions.
const (
	AuditAdmissionRefused = "admission.refused" // a certificate was not admitted
	AuditAdmitted         = "admission.accepted"
	AuditRequestRefused   = "request.refused" // a channel or request the certificate does not permit
	AuditSessionStart     = "session.start"
	AuditSessionEnd       = "session.end"
	AuditSessionRefused   = "session.refused" // e.g. recording unavailable on a closed tier
	AuditRecordingFailed  = "recording.failed"
	// AuditRecordingDropped: an open tier's recorder fell behind and
	// output was sent but not recorded (recqueue.go).
	AuditRecordingDropped = "recording.dropped"
	// AuditSessionUnrecorded: an open tier's session goes on unrecorded
	// (also reported to the CA and the playback server).
	AuditSessionUnrecorded = "session.unrecorded"
	AuditForward           = "forward.open"
)

// AuditEvent is one security-relevant event on this host.
type AuditEvent struct {
	Time       time.Time
	Action     string // one of the Audit constants
	SessionID  string // connection id, or connection-channel for sessions
	Serial     uint64
	KeyID      string
	Principal  string // the local user asked for
	Tier       string
	ClientAddr string
	Reason     string // why, for refusals and ends
	Detail     string // what: command, forward target, exit status
}

// Auditor receives audit events. Audit must not block for long: it runs on
// the connection's path.
type Auditor interface {
	Audit(ctx context.Context, ev AuditEvent)
}

// LogAuditor returns an Auditor that writes each event to l at info level
// (warn for refusals and failures), with the fixed keys.
func LogAuditor(l *slog.Logger) Auditor { return logAuditor{l} }

type logAuditor struct{ l *slog.Logger }

func (a logAuditor) Audit(ctx context.Context, ev AuditEvent) {
	level := slog.LevelInfo
	switch ev.Action {
	case AuditAdmissionRefused, AuditRequestRefused, AuditSessionRefused, AuditRecordingFailed, AuditRecordingDropped, AuditSessionUnrecorded:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("action", ev.Action),
		slog.String("session_id", ev.SessionID),
		slog.Uint64("serial", ev.Serial),
		slog.String("key_id", ev.KeyID),
		slog.String("principal", ev.Principal),
		slog.String("tier", ev.Tier),
		slog.String("client", ev.ClientAddr),
	}
	if ev.Reason != "" {
		attrs = append(attrs, slog.String("reason", ev.Reason))
	}
	if ev.Detail != "" {
		attrs = append(attrs, slog.String("detail", ev.Detail))
	}
	a.l.LogAttrs(ctx, level, "audit", attrs...)
}
