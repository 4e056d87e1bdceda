package recorder

import "context"

// CloseIncomplete ends the recording like Close, but marks it cut short:
// Complete=false and Incomplete=reason (e.g. "agent restarted"), for a
// session that did not end by itself but was cut by the host agent's own
// stop or restart. A write failure still wins: its reason is kept.
func (r *Recording) CloseIncomplete(ctx context.Context, end EndInfo, reason string) (*Metadata, error) {
	if reason == "" {
		reason = "cut short"
	}
	m, err := r.finish(end, reason)
	if err == nil {
		r.spool.cfg.Logger.DebugContext(ctx, "recorder: recording cut short",
			"session_id", m.SessionID, "tier", m.Tier, "reason", reason)
	}
	return m, err
}
