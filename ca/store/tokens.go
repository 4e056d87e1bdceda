package store

import (
	"fmt"
	"time"
)

// Join token kinds (JoinToken.Kind).
const (
	JoinKindHost     = "host"     // an agent joining as a host
	JoinKindPlayback = "playback" // a playback server joining
)

// JoinToken is a one-time token that lets a host or playback server join.
// ID is TokenID(token): the token itself is never stored.
type JoinToken struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`            // JoinKindHost or JoinKindPlayback
	Names     []string  `json:"names,omitempty"` // host names (principals) the joiner may claim
	Tier      string    `json:"tier,omitzero"`
	CreatedAt time.Time `json:"created_at,omitzero"` // set by PutJoinToken when zero
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"` // set by ConsumeJoinToken
	CreatedBy string    `json:"created_by,omitzero"`
}

// PutJoinToken stores a new token. An id that exists (even a used one)
// gives an error wrapping ErrExists: a one-time token is never revived.
func (tx *Tx) PutJoinToken(t *JoinToken) error {
	const op = "put join token"
	if err := checkTokenID(op, t.ID); err != nil {
		return err
	}
	if t.Kind != JoinKindHost && t.Kind != JoinKindPlayback {
		return fmt.Errorf("store: %s: kind %q is not %q or %q: %w", op, t.Kind, JoinKindHost, JoinKindPlayback, ErrInvalid)
	}
	if t.ExpiresAt.IsZero() {
		return fmt.Errorf("store: %s: ExpiresAt is zero: %w", op, ErrInvalid)
	}
	b, err := tx.writeBucket(op, bucketTokens)
	if err != nil {
		return err
	}
	if b.Get([]byte(t.ID)) != nil {
		return fmt.Errorf("store: %s: %w", op, ErrExists)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = tx.now()
	}
	if err := putJSONExpiring(b, []byte(t.ID), t, t.ExpiresAt); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// ConsumeJoinToken marks the token used at now and returns it. It fails
// with an error wrapping ErrNotFound, ErrTokenUsed (checked first) or
// ErrTokenExpired (now >= ExpiresAt). Because the mark is written in the
// caller's transaction, two joins racing on one token cannot both succeed:
// write transactions are serialized, and the second sees UsedAt.
func (tx *Tx) ConsumeJoinToken(id string, now time.Time) (*JoinToken, error) {
	const op = "consume join token"
	b, err := tx.writeBucket(op, bucketTokens)
	if err != nil {
		return nil, err
	}
	t := new(JoinToken)
	found, err := getJSON(b, []byte(id), t)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	switch {
	case !found:
		return nil, fmt.Errorf("store: %s: %w", op, ErrNotFound)
	case !t.UsedAt.IsZero():
		return nil, fmt.Errorf("store: %s: %w", op, ErrTokenUsed)
	case !now.Before(t.ExpiresAt):
		return nil, fmt.Errorf("store: %s: %w", op, ErrTokenExpired)
	}
	t.UsedAt = now
	if err := putJSONExpiring(b, []byte(id), t, t.ExpiresAt); err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	return t, nil
}
