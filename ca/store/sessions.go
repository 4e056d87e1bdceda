package store

import (
	"fmt"
	"time"
)

// Session is a CA login session. ID is TokenID(token): the bearer token is
// never stored.
type Session struct {
	ID         string    `json:"id"`
	User       string    `json:"user"`
	Groups     []string  `json:"groups,omitempty"`
	MFA        bool      `json:"mfa,omitzero"`    // the login included a second factor
	Source     string    `json:"source,omitzero"` // how the user logged in, e.g. "local", "oidc"
	CreatedAt  time.Time `json:"created_at,omitzero"`
	ExpiresAt  time.Time `json:"expires_at"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	ClientAddr string    `json:"client_addr,omitzero"`
	// Scope limits what the session may do; "" is a full login session. A
	// scoped session (api.ScopeReadRecordings) only says who it is.
	Scope string `json:"scope,omitzero"`
	// Parent is the ID of the session a scoped session was made from: it
	// ends with it.
	Parent string `json:"parent,omitzero"`
}

// Active reports whether the session may be used at now: not revoked and
// not expired.
func (s *Session) Active(now time.Time) bool {
	return s.RevokedAt.IsZero() && now.Before(s.ExpiresAt)
}

// PutSession creates or replaces a session. CreatedAt is set to now when
// zero; ExpiresAt is required.
func (tx *Tx) PutSession(s *Session) error {
	const op = "put session"
	if err := checkTokenID(op, s.ID); err != nil {
		return err
	}
	if err := checkName(op, "user", s.User); err != nil {
		return err
	}
	if s.ExpiresAt.IsZero() {
		return fmt.Errorf("store: %s: ExpiresAt is zero: %w", op, ErrInvalid)
	}
	b, err := tx.writeBucket(op, bucketSessions)
	if err != nil {
		return err
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = tx.now()
	}
	if err := putJSONExpiring(b, []byte(s.ID), s, s.ExpiresAt); err != nil {
		return fmt.Errorf("store: %s for %q: %w", op, s.User, err)
	}
	return nil
}

// GetSession returns the session with this id (expired or revoked ones
// too; see Active), or an error wrapping ErrNotFound.
func (tx *Tx) GetSession(id string) (*Session, error) {
	s := new(Session)
	found, err := getJSON(tx.bucket(bucketSessions), []byte(id), s)
	if err != nil {
		return nil, fmt.Errorf("store: get session: %w", err)
	}
	if !found {
		return nil, fmt.Errorf("store: get session: %w", ErrNotFound)
	}
	return s, nil
}

// ListSessions returns every stored session, ordered by id.
func (tx *Tx) ListSessions() ([]Session, error) {
	var out []Session
	err := forEachJSON(tx.bucket(bucketSessions), func(_ []byte, s *Session) error {
		out = append(out, *s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list sessions: %w", err)
	}
	return out, nil
}

// RevokeUserSessions sets RevokedAt = at on every session of user that is
// not revoked yet and returns how many it revoked. It scans all sessions:
// revocation is rare and sessions are few compared to certificates.
func (tx *Tx) RevokeUserSessions(user string, at time.Time) (int, error) {
	const op = "revoke sessions"
	b, err := tx.writeBucket(op, bucketSessions)
	if err != nil {
		return 0, err
	}
	var hit []*Session
	err = forEachJSON(b, func(_ []byte, s *Session) error {
		if s.User == user && s.RevokedAt.IsZero() {
			hit = append(hit, s)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: %s of %q: %w", op, user, err)
	}
	// Written after the scan: bbolt cursors must not run across their own writes.
	for _, s := range hit {
		s.RevokedAt = at
		if err := putJSONExpiring(b, []byte(s.ID), s, s.ExpiresAt); err != nil {
			return 0, fmt.Errorf("store: %s of %q: %w", op, user, err)
		}
	}
	return len(hit), nil
}

// DeleteExpiredSessions deletes every session with ExpiresAt <= now and
// returns how many it deleted.
func (tx *Tx) DeleteExpiredSessions(now time.Time) (int, error) {
	const op = "delete expired sessions"
	b, err := tx.writeBucket(op, bucketSessions)
	if err != nil {
		return 0, err
	}
	var keys [][]byte
	err = forEachJSON(b, func(k []byte, s *Session) error {
		if !now.Before(s.ExpiresAt) {
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: %s: %w", op, err)
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, fmt.Errorf("store: %s: %w", op, err)
		}
	}
	return len(keys), nil
}
