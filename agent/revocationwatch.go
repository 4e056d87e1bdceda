package agent

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
)

// revocationWatcher is the part of the CA client that streams revocations
// (ca/client.Client.WatchRevocations). A Config.CA without it is polled.
type revocationWatcher interface {
	WatchRevocations(ctx context.Context, req client.WatchRequest, fn func(api.RevocationEvent) error) error
}

// Revocation stream reconnects: at once after a stream that lived, then
// backing off up to RevocationInterval while the CA is away; every failure
// is followed by one poll, so polling carries on while the stream cannot.
const (
	watchRetryMin = 100 * time.Millisecond
	// watchLived is how long a stream must have lasted for the next
	// reconnect to be immediate again.
	watchLived = 10 * time.Second
	// heardSaveEvery throttles saving the cache for heartbeats alone, so
	// that a restart knows how fresh the list was.
	heardSaveEvery = time.Minute
)

// revocationLoop keeps the revocation stream open and applies what it
// brings as it comes: a revoked certificate's sessions end and its logins
// are refused within moments of the CA committing the revocation. Owned
// by Serve; it returns when ctx ends.
func (s *Server) revocationLoop(ctx context.Context) {
	w, ok := s.cfg.CA.(revocationWatcher)
	if !ok {
		s.pollRevocations(ctx)
		return
	}
	retry := watchRetryMin
	failing := false
	var lastSaved time.Time
	for {
		id := s.identity()
		opened := time.Now()
		connected := false
		err := w.WatchRevocations(ctx, client.WatchRequest{Tier: s.cfg.Tier, Since: s.revocationSeq(), Cert: id.cert, Signer: id.key},
			func(ev api.RevocationEvent) error {
				if !connected {
					connected = true
					if failing {
						failing = false
						s.log.InfoContext(ctx, "agent: revocation stream open again", "seq", s.revocationSeq())
					}
				}
				s.applyRevocationEvent(ctx, ev, &lastSaved)
				return nil
			})
		if ctx.Err() != nil {
			return
		}
		if !failing {
			failing = true
			s.log.WarnContext(ctx, "agent: revocation stream ended; polling until it is back", "err", err,
				"cached_generation", s.revocationGeneration(), "seq", s.revocationSeq())
		}
		if perr := s.refreshRevocations(ctx); perr != nil && ctx.Err() == nil {
			s.log.DebugContext(ctx, "agent: revocation poll failed", "err", perr)
		}
		var ae *api.Error
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			retry = s.cfg.RevocationInterval // a CA without the stream: poll
		case connected && time.Since(opened) > watchLived:
			retry = watchRetryMin
		}
		if !sleep(ctx, retry) {
			return
		}
		retry = min(2*retry, s.cfg.RevocationInterval)
	}
}

// applyRevocationEvent applies one event of the stream. Only the stream's
// goroutine (and refreshRevocations, on the same goroutine or before it
// starts) writes s.revs.
func (s *Server) applyRevocationEvent(ctx context.Context, ev api.RevocationEvent, lastSaved *time.Time) {
	now := s.cfg.Now().UTC()
	cur := s.revs.Load()
	var (
		next    *revocations
		changed bool
	)
	if ev.Type == api.EventHello && ev.Flags != nil {
		s.setFlagRules(ev.Flags.Rules) // flags.go
	}
	if ev.Type == api.EventHello || ev.Type == api.EventTrust {
		s.applyTrust(ctx, ev.Trust)       // trustrotate.go
		s.applyHostCATrust(ctx, ev.Trust) // hostcatrust.go
		if ev.Type == api.EventTrust {
			return
		}
	}
	switch ev.Type {
	case api.EventTerminate:
		s.applyTerminate(ctx, ev.Terminate) // terminate.go
		return
	case api.EventSnapshot:
		next, changed = cur.merge(*ev.List, now)
	case api.EventRevoke:
		next, changed = cur.with(ev, now)
		if changed {
			s.log.InfoContext(ctx, "agent: certificate revoked", "serial", ev.Serial, "key_id", ev.KeyID,
				"tier", ev.Tier, "seq", ev.Seq)
		}
	case api.EventHeartbeat, api.EventHello:
		if cur == nil {
			return // nothing to vouch for until the snapshot
		}
		next = cur.heard(now, ev.Seq)
		if ev.Type == api.EventHello {
			next.list.Seq = cur.list.Seq // hello echoes our own position
		}
	default:
		return
	}
	s.revs.Store(next)
	if changed || ev.Type == api.EventSnapshot || now.Sub(*lastSaved) >= heardSaveEvery {
		*lastSaved = now
		if err := s.saveRevocations(next); err != nil {
			s.log.ErrorContext(ctx, "agent: cannot cache the revocation list", "err", err)
		}
	}
	if changed {
		s.endRevokedSessions(ctx)
	}
}
