package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// revocations is one revocation list as the agent enforces it. Immutable;
// a poll swaps in a new one.
type revocations struct {
	list      api.RevocationList
	fetchedAt time.Time
	serials   map[uint64]bool
	keyIDs    map[string]bool
}

// revocationFile is the on-disk cache (fileRevocations), kept so that a
// restart while the CA is unreachable still enforces the last list.
type revocationFile struct {
	List      api.RevocationList `json:"list"`
	FetchedAt time.Time          `json:"fetched_at"`
}

func newRevocations(l api.RevocationList, fetchedAt time.Time) *revocations {
	r := &revocations{list: l, fetchedAt: fetchedAt,
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

func loadRevocations(dataDir string) (*revocations, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, fileRevocations))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: read revocation cache: %w", err)
	}
	var f revocationFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("agent: decode revocation cache %s: %w", fileRevocations, err)
	}
	return newRevocations(f.List, f.FetchedAt), nil
}

func (s *Server) saveRevocations(r *revocations) error {
	data, err := json.Marshal(revocationFile{List: r.list, FetchedAt: r.fetchedAt})
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
// is unreachable the last list stays in force. Owned by Serve.
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
