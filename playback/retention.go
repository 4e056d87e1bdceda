package playback

import (
	"context"
	"fmt"
	"time"

	"github.com/sshward/sshward/playback/store"
)

// sweepLoop deletes expired recordings now and every SweepInterval.
func (s *Server) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "playback: retention sweep", "deleted", n, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes every finished recording older than its tier's retention
// and returns how many it deleted. Each deletion is audited.
func (s *Server) Sweep(ctx context.Context) (int, error) {
	now := s.cfg.Now()
	ids, err := s.st.Expired(ctx, now, s.cfg.Retention.For)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		// The bucket's copy first: a recording deleted here but not there
		// would come back with the next reindex. A failure is retried by
		// the next sweep.
		if s.archive != nil {
			if err := s.archive.remove(ctx, id); err != nil {
				return n, fmt.Errorf("delete %s from object storage: %w", id, err)
			}
		}
		rec, err := s.st.Delete(ctx, id)
		if err != nil {
			return n, err
		}
		n++
		keep := s.cfg.Retention.For(rec.Meta.Tier)
		ev := store.AuditEvent{Type: "retention.delete", Actor: "retention", Subject: id, Details: map[string]string{
			"tier": rec.Meta.Tier, "user": rec.Meta.Identity, "sha256": rec.Meta.SHA256, "retention": keep.String()}}
		if _, err := s.st.AppendAudit(context.WithoutCancel(ctx), ev); err != nil {
			s.log.ErrorContext(ctx, "playback: audit retention delete", "session_id", id, "err", err)
		}
		s.log.InfoContext(ctx, "playback: recording expired and deleted", "session_id", id, "tier", rec.Meta.Tier, "retention", keep)
	}
	return n, nil
}
