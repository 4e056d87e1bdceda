package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// bucketClaims holds the claims of single-use certificates: serial (uint64
// BE) → JSON Claim. It is listed in allBuckets (db.go) so Open creates it.
var bucketClaims = []byte("single_use_claims")

// Claim records that a single-use certificate started a session: which
// host claimed it, for which connection, from which client address. It is
// kept until ExpiresAt (the certificate's expiry plus a margin for host
// clock skew), after which the certificate is refused anyway.
type Claim struct {
	Serial     uint64    `json:"serial"`
	RequestID  string    `json:"request_id,omitzero"`
	Host       string    `json:"host"`
	SessionID  string    `json:"session_id"`
	ClientAddr string    `json:"client_addr,omitzero"`
	ClaimedAt  time.Time `json:"claimed_at"` // set by ClaimSerial when zero
	ExpiresAt  time.Time `json:"expires_at"`
}

// ClaimSerial records c as the one use of certificate c.Serial. When the
// serial was claimed before it records nothing and returns the earlier
// claim with an error wrapping ErrClaimed. Write transactions are
// serialized, so of any number of racing claims exactly one succeeds, on
// any number of hosts. The check and the write happen in the caller's
// transaction: a closure that claims and then fails leaves no claim.
func (tx *Tx) ClaimSerial(c *Claim) (*Claim, error) {
	const op = "claim serial"
	switch {
	case c.Serial == 0:
		return nil, fmt.Errorf("store: %s: serial is zero: %w", op, ErrInvalid)
	case c.ExpiresAt.IsZero():
		return nil, fmt.Errorf("store: %s: ExpiresAt is zero: %w", op, ErrInvalid)
	}
	for _, f := range [...]struct{ name, v string }{{"host", c.Host}, {"session id", c.SessionID}} {
		if err := checkName(op, f.name, f.v); err != nil {
			return nil, err
		}
	}
	b, err := tx.writeBucket(op, bucketClaims)
	if err != nil {
		return nil, err
	}
	prev := new(Claim)
	found, err := getJSON(b, serialKey(c.Serial), prev)
	if err != nil {
		return nil, fmt.Errorf("store: %s %d: %w", op, c.Serial, err)
	}
	if found {
		return prev, fmt.Errorf("store: %s %d: %w", op, c.Serial, ErrClaimed)
	}
	if c.ClaimedAt.IsZero() {
		c.ClaimedAt = tx.now()
	}
	if err := putJSONExpiring(b, serialKey(c.Serial), c, c.ExpiresAt); err != nil {
		return nil, fmt.Errorf("store: %s %d: %w", op, c.Serial, err)
	}
	return c, nil
}

// GetClaim returns the claim of serial, or an error wrapping ErrNotFound.
func (tx *Tx) GetClaim(serial uint64) (*Claim, error) {
	c := new(Claim)
	found, err := getJSON(tx.bucket(bucketClaims), serialKey(serial), c)
	if err != nil {
		return nil, fmt.Errorf("store: get claim %d: %w", serial, err)
	}
	if !found {
		return nil, fmt.Errorf("store: get claim %d: %w", serial, ErrNotFound)
	}
	return c, nil
}

// DeleteExpiredClaims deletes up to limit claims with ExpiresAt <= now, in
// serial order, stopping at the first one still in force. Serials grow
// with issuance time, so the oldest claims come first; the bound keeps the
// cost per call small when it runs inside a claim's transaction.
func (tx *Tx) DeleteExpiredClaims(now time.Time, limit int) (int, error) {
	const op = "delete expired claims"
	b, err := tx.writeBucket(op, bucketClaims)
	if err != nil {
		return 0, err
	}
	var dead [][]byte
	c := b.Cursor()
	for k, raw := c.First(); k != nil && len(dead) < limit; k, raw = c.Next() {
		cl := new(Claim)
		if err := json.Unmarshal(raw, cl); err != nil {
			return 0, fmt.Errorf("store: %s: undecodable claim: %w", op, err)
		}
		if now.Before(cl.ExpiresAt) {
			break
		}
		dead = append(dead, bytes.Clone(k))
	}
	for _, k := range dead {
		if err := b.Delete(k); err != nil {
			return 0, fmt.Errorf("store: %s: %w", op, err)
		}
	}
	return len(dead), nil
}
