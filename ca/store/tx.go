package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Tx is one transaction: read-only inside View, writable inside Update. It
// is valid only inside the closure it was passed to. Records it returns are
// decoded copies that the caller owns.
type Tx struct {
	kv       kvTx
	now      func() time.Time
	live     *liveMemo     // the DB's; see SessionNotRevoked
	certKeep time.Duration // EtcdOptions.CertKeep (bbolt: unused, records stay)
}

// maxNameLen bounds user names, key ids, tiers and meta keys, far below
// bbolt's 32 KiB key limit, so that a hostile value cannot bloat pages.
const maxNameLen = 1024

// TokenID returns the key under which a session or join token is stored:
// the lowercase hex SHA-256 of the token. The token itself is never stored,
// so a copy of the file does not let anyone log in or join.
func TokenID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// checkName validates a string used as (part of) a key.
func checkName(op, field, s string) error {
	if s == "" {
		return fmt.Errorf("store: %s: %s is empty: %w", op, field, ErrInvalid)
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("store: %s: %s longer than %d bytes: %w", op, field, maxNameLen, ErrInvalid)
	}
	return nil
}

// checkTokenID insists on TokenID's form, which keeps raw tokens out of the
// file even by mistake. The id itself is never put in error text.
func checkTokenID(op, id string) error {
	if len(id) != 2*sha256.Size {
		return fmt.Errorf("store: %s: id is not a hex SHA-256 (use TokenID): %w", op, ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("store: %s: id is not a hex SHA-256 (use TokenID): %w", op, ErrInvalid)
		}
	}
	return nil
}

// bucket returns a top-level bucket, or nil when it does not exist (only
// possible in a read-only file that was never opened for writing).
func (tx *Tx) bucket(name []byte) kvBucket { return tx.kv.Bucket(name) }

// writeBucket returns a top-level bucket for writing. Open creates every
// bucket, so a missing one means a read-only DB.
func (tx *Tx) writeBucket(op string, name []byte) (kvBucket, error) {
	if !tx.kv.Writable() {
		return nil, fmt.Errorf("store: %s: transaction is read-only (use Update): %w", op, ErrReadOnly)
	}
	b := tx.kv.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("store: %s: bucket %s missing: %w", op, name, ErrReadOnly)
	}
	return b, nil
}

// getJSON decodes the value at key into v; found is false when absent.
func getJSON(b kvBucket, key []byte, v any) (found bool, err error) {
	if b == nil {
		return false, nil
	}
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, err
	}
	return true, nil
}

func putJSON(b kvBucket, key []byte, v any) error {
	raw, err := marshalRecord(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

// putJSONExpiring is putJSON for a record no one needs after at (see
// kvBucket.PutExpiring).
func putJSONExpiring(b kvBucket, key []byte, v any, at time.Time) error {
	raw, err := marshalRecord(v)
	if err != nil {
		return err
	}
	return b.PutExpiring(key, raw, at)
}

// forEachJSON decodes every value of b in key order into a fresh T.
func forEachJSON[T any](b kvBucket, fn func(k []byte, v *T) error) error {
	if b == nil {
		return nil
	}
	c := b.Cursor()
	for k, raw := c.First(); k != nil; k, raw = c.Next() {
		v := new(T)
		if err := json.Unmarshal(raw, v); err != nil {
			// The key stays out of the message: for sessions and join
			// tokens it is a token hash.
			return fmt.Errorf("undecodable record: %w", err)
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// GetMeta returns a copy of the value stored under key, or ErrNotFound.
// Meta holds small settings (playback URL, CA settings); its keys are the
// caller's and never collide with the store's own bookkeeping.
func (tx *Tx) GetMeta(key string) ([]byte, error) {
	if err := checkName("get meta", "key", key); err != nil {
		return nil, err
	}
	b := tx.bucket(bucketMeta)
	var v []byte
	if b != nil {
		v = b.Get([]byte(key))
	}
	if v == nil {
		return nil, fmt.Errorf("store: get meta %q: %w", key, ErrNotFound)
	}
	return append([]byte(nil), v...), nil
}

// PutMeta stores v under key, replacing any earlier value.
func (tx *Tx) PutMeta(key string, v []byte) error {
	if err := checkName("put meta", "key", key); err != nil {
		return err
	}
	b, err := tx.writeBucket("put meta", bucketMeta)
	if err != nil {
		return err
	}
	if v == nil {
		v = []byte{} // bbolt stores nil as empty; be explicit
	}
	if err := b.Put([]byte(key), v); err != nil {
		return fmt.Errorf("store: put meta %q: %w", key, err)
	}
	return nil
}
