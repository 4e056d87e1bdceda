package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// revocations is one revocation list as the agent enforces it. Immutable:
// a poll, a stream event or a heartbeat swaps in a new one (maps are
// shared between versions only while neither changes them).
type revocations struct {
	list api.RevocationList
	// heardAt is when the CA last confirmed the list current: a fetch, a
	// stream event or heartbeat. Its age is what revocation_max_stale
	// bounds (revocationstale.go).
	heardAt time.Time
	serials map[uint64]bool
	keyIDs  map[string]bool
}

// revocationFile is the on-disk cache (fileRevocations), kept so that a
// restart while the CA is unreachable still enforces the last list.
type revocationFile struct {
	List      api.RevocationList `json:"list"`
	FetchedAt time.Time          `json:"fetched_at"` // heardAt
}

func newRevocations(l api.RevocationList, heardAt time.Time) *revocations {
	r := &revocations{list: l, heardAt: heardAt,
		serials: make(map[uint64]bool, len(l.Serials)), keyIDs: make(map[string]bool, len(l.KeyIDs))}
	for _, s := range l.Serials {
		r.serials[s] = true
	}
	for _, k := range l.KeyIDs {
		r.keyIDs[k] = true
	}
	return r
}

// revoked reports whether cert is on the list, by serial or by key id.
func (r *revocations) revoked(cert *ssh.Certificate) bool {
	return r != nil && (r.serials[cert.Serial] || r.keyIDs[cert.KeyId])
}

// heard returns r confirmed current at t (and at log position seq, when
// further).
func (r *revocations) heard(t time.Time, seq uint64) *revocations {
	next := *r
	next.heardAt = t
	next.list.Seq = max(next.list.Seq, seq)
	return &next
}

// with returns r plus one revocation from the stream, and whether it was
// new. Each new entry counts as one generation, as in the CA's store, so a
// later poll of the same state carries the same generation.
func (r *revocations) with(ev api.RevocationEvent, t time.Time) (*revocations, bool) {
	if r == nil {
		r = newRevocations(api.RevocationList{}, time.Time{})
	}
	if (ev.Serial != 0 && r.serials[ev.Serial]) || (ev.Serial == 0 && r.keyIDs[ev.KeyID]) {
		return r.heard(t, ev.Seq), false
	}
	l := r.list
	l.Serials = append([]uint64(nil), r.list.Serials...)
	l.KeyIDs = append([]string(nil), r.list.KeyIDs...)
	if ev.Serial != 0 {
		l.Serials = append(l.Serials, ev.Serial)
	} else {
		l.KeyIDs = append(l.KeyIDs, ev.KeyID)
	}
	l.Generation++
	l.Seq = max(l.Seq, ev.Seq)
	l.Notices = withNotice(r.list.Notices, ev) // oncall.go
	return newRevocations(l, t), true
}

// merge returns the union of r and a whole list from the CA (a stream
// snapshot), and whether anything was added. A union never un-revokes: a
// CA restored from an older backup cannot lift what the host enforces.
func (r *revocations) merge(snap api.RevocationList, t time.Time) (*revocations, bool) {
	if r == nil {
		return newRevocations(snap, t), len(snap.Serials)+len(snap.KeyIDs) > 0
	}
	l := r.list
	l.Serials = append([]uint64(nil), r.list.Serials...)
	l.KeyIDs = append([]string(nil), r.list.KeyIDs...)
	added := false
	for _, s := range snap.Serials {
		if !r.serials[s] {
			l.Serials, added = append(l.Serials, s), true
		}
	}
	for _, k := range snap.KeyIDs {
		if !r.keyIDs[k] {
			l.KeyIDs, added = append(l.KeyIDs, k), true
		}
	}
	l.Generation = max(l.Generation, snap.Generation)
	l.Seq = snap.Seq // the CA's log position, even when behind ours
	l.GeneratedAt = snap.GeneratedAt
	if snap.MaxStale != nil {
		l.MaxStale = snap.MaxStale
	}
	if snap.Tier != "" {
		l.Tier = snap.Tier
	}
	l.Notices = mergeNotices(r.list.Notices, snap.Notices) // oncall.go
	return newRevocations(l, t), added
}

func loadRevocations(dataDir string) (*revocations, error) {
	var f revocationFile
	if found, err := readJSONFile(dataDir, fileRevocations, "revocation cache", &f); !found || err != nil {
		return nil, err
	}
	return newRevocations(f.List, f.FetchedAt), nil
}

func (s *Server) saveRevocations(r *revocations) error {
	data, err := json.Marshal(revocationFile{List: r.list, FetchedAt: r.heardAt})
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.cfg.DataDir, fileRevocations), data, s.cfg.Rand)
}

// refreshRevocations fetches the list once. A list older than the one
// held (lower generation) is ignored so that a stale CA replica cannot
// un-revoke a certificate.
func (s *Server) refreshRevocations(ctx context.Context) error {
	id := s.identity()
	l, err := s.cfg.CA.HostRevoked(ctx, s.cfg.Tier, id.cert, id.key)
	if err != nil {
		return fmt.Errorf("agent: fetch revocation list: %w", err)
	}
	if l.Tier != "" && l.Tier != s.cfg.Tier {
		return fmt.Errorf("agent: fetch revocation list: the CA answered for tier %q", l.Tier)
	}
	cur := s.revs.Load()
	if cur != nil && l.Generation < cur.list.Generation {
		return fmt.Errorf("agent: fetch revocation list: generation %d is older than the cached %d", l.Generation, cur.list.Generation)
	}
	if cur != nil {
		l.Seq = max(l.Seq, cur.list.Seq)
	}
	next := newRevocations(*l, s.cfg.Now().UTC())
	s.revs.Store(next)
	if err := s.saveRevocations(next); err != nil {
		// Enforcement goes on from memory; only a restart without the CA
		// would miss this list.
		s.log.ErrorContext(ctx, "agent: cannot cache the revocation list", "err", err)
	}
	if cur == nil || l.Generation != cur.list.Generation {
		s.log.InfoContext(ctx, "agent: revocation list updated", "generation", l.Generation,
			"serials", len(l.Serials), "key_ids", len(l.KeyIDs))
		s.endRevokedSessions(ctx)
	}
	return nil
}

// pollRevocations refreshes the list every RevocationInterval. While the CA
// is unreachable the last list stays in force. It is what the agent does
// with a CA client that cannot stream (revocationLoop).
func (s *Server) pollRevocations(ctx context.Context) {
	t := time.NewTicker(s.cfg.RevocationInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.refreshRevocations(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			s.log.WarnContext(ctx, "agent: revocation list unavailable; enforcing the cached one", "err", err,
				"cached_generation", s.revocationGeneration())
		case err == nil && failing:
			failing = false
			s.log.InfoContext(ctx, "agent: revocation list reachable again")
		}
	}
}

func (s *Server) revocationGeneration() uint64 {
	if r := s.revs.Load(); r != nil {
		return r.list.Generation
	}
	return 0
}

func (s *Server) revocationSeq() uint64 {
	if r := s.revs.Load(); r != nil {
		return r.list.Seq
	}
	return 0
}
