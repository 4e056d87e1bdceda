package store

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// liveMemo remembers, per session id, stored bytes known to decode to a
// session that is not revoked, so SessionNotRevoked (asked inside every
// issuance's transaction) decodes a session once rather than every time.
// It is a pure cache of a function of the bytes: equal bytes decode to the
// same session, so a revocation (which rewrites the bytes) is seen at once.
type liveMemo struct {
	mu sync.Mutex
	m  map[string]string // session id → raw JSON of a non-revoked session
}

// maxLiveMemo bounds the memo; past it it starts over.
const maxLiveMemo = 10_000

// SessionNotRevoked reports whether the session id exists and is not
// revoked, as of this transaction (expiry is the caller's business). It
// gives the same answer as GetSession + RevokedAt.IsZero, cheaper.
func (tx *Tx) SessionNotRevoked(id string) (bool, error) {
	b := tx.bucket(bucketSessions)
	if b == nil {
		return false, nil
	}
	raw := b.Get([]byte(id))
	if raw == nil {
		return false, nil
	}
	m := tx.live
	if m != nil {
		m.mu.Lock()
		hit := m.m[id] == string(raw)
		m.mu.Unlock()
		if hit {
			return true, nil
		}
	}
	var s struct {
		RevokedAt time.Time `json:"revoked_at"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return false, fmt.Errorf("store: get session: %w", err)
	}
	if !s.RevokedAt.IsZero() {
		return false, nil
	}
	if m != nil {
		m.mu.Lock()
		if m.m == nil || len(m.m) >= maxLiveMemo {
			m.m = make(map[string]string)
		}
		m.m[id] = string(raw)
		m.mu.Unlock()
	}
	return true, nil
}
