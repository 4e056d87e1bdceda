package store

import (
	"encoding/binary"
	"fmt"
	"time"
)

// bucketUsedTokens remembers bearer tokens from elsewhere that may log in
// only once (OIDC ID tokens): sha256 hex of the token → its expiry (Unix
// seconds, uint64 BE). Listed in allBuckets (db.go) so Open creates it.
var bucketUsedTokens = []byte("used_tokens")

// UseToken records that the token with id (its SHA-256, hex) was used, until
// expires. A token recorded before and not yet expired is ErrExists: within
// one transaction, so of racing uses exactly one succeeds. A few expired
// entries are dropped on the way, so the bucket stays as large as the
// tokens still valid.
func (tx *Tx) UseToken(id string, expires time.Time) error {
	const op = "use token"
	if len(id) != 64 || expires.IsZero() {
		return fmt.Errorf("store: %s: id must be a sha256 hex and expires set: %w", op, ErrInvalid)
	}
	b, err := tx.writeBucket(op, bucketUsedTokens)
	if err != nil {
		return err
	}
	now := tx.now()
	if v := b.Get([]byte(id)); len(v) == 8 && now.Unix() < int64(binary.BigEndian.Uint64(v)) {
		return fmt.Errorf("store: %s: %w", op, ErrExists)
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(expires.Unix()))
	if err := b.PutExpiring([]byte(id), v[:], expires); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	// Drop up to 16 expired entries (keys are hashes: a random sample).
	c := b.Cursor()
	var stale [][]byte
	for k, v := c.First(); k != nil && len(stale) < 16; k, v = c.Next() {
		if len(v) == 8 && now.Unix() >= int64(binary.BigEndian.Uint64(v)) {
			stale = append(stale, append([]byte(nil), k...))
		}
	}
	for _, k := range stale {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("store: %s: %w", op, err)
		}
	}
	return nil
}
