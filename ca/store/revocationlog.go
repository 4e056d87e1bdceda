package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
)

// The revocation log orders every revocation ever added, across tiers, by
// a store-wide sequence number, so that a watcher that saw everything up
// to N can ask for what came after N (a CA restart or a dropped stream
// loses nothing). It lives inside bucketRevoked under names no tier can
// have (tier names never start with '@'; "@hosts" is a bucket of its own):
//
//	"@seq" → uint64 BE, the last sequence number handed out
//	"@log" → bucket: seq (uint64 BE) → JSON Revocation (with Seq)
var (
	keyRevocationSeq    = []byte("@seq")
	bucketRevocationLog = []byte("@log")
)

// logRevocation gives r the next sequence number and appends it to the
// log. It runs in AddRevocation's transaction, only for new revocations.
func (tx *Tx) logRevocation(root kvBucket, r *Revocation) error {
	seq := uint64(0)
	if v := root.Get(keyRevocationSeq); len(v) == 8 {
		seq = binary.BigEndian.Uint64(v)
	}
	seq++
	lb, err := root.CreateBucketIfNotExists(bucketRevocationLog)
	if err != nil {
		return fmt.Errorf("revocation log: %w", err)
	}
	r.Seq = seq
	if err := putJSON(lb, serialKey(seq), r); err != nil {
		return fmt.Errorf("revocation log: %w", err)
	}
	if err := root.Put(keyRevocationSeq, serialKey(seq)); err != nil {
		return fmt.Errorf("revocation log: %w", err)
	}
	return nil
}

// OnRevocationsChanged has fn called, until Close, whenever another
// process (a CA replica on the same etcd cluster) adds a revocation, so
// that watchers here learn of it at once. On a bbolt file it does
// nothing: the file has one writer, which knows its own commits.
func (db *DB) OnRevocationsChanged(fn func()) {
	if db.etcd != nil {
		db.etcd.watchKey(bucketRevoked, keyRevocationSeq, fn)
	}
}

// RevocationSeq returns the sequence number of the latest revocation (0
// when none was logged).
func (tx *Tx) RevocationSeq() uint64 {
	root := tx.bucket(bucketRevoked)
	if root == nil {
		return 0
	}
	if v := root.Get(keyRevocationSeq); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// RevocationsSince returns the logged revocations with Seq > since whose
// tier is one of tiers (all tiers when tiers is nil), in sequence order,
// at most limit of them when limit > 0. more reports that the limit cut
// the answer short; scanned is the last sequence number looked at, which
// the caller passes as since to continue (it may be past the last
// revocation returned, when later ones were of other tiers).
func (tx *Tx) RevocationsSince(since uint64, tiers []string, limit int) (out []Revocation, scanned uint64, more bool, err error) {
	scanned = since
	root := tx.bucket(bucketRevoked)
	if root == nil {
		return nil, scanned, false, nil
	}
	lb := root.Bucket(bucketRevocationLog)
	if lb == nil {
		return nil, scanned, false, nil
	}
	c := lb.Cursor()
	for k, v := c.Seek(serialKey(since + 1)); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			return nil, since, false, fmt.Errorf("store: revocation log: malformed key: %w", ErrInvalid)
		}
		if limit > 0 && len(out) >= limit {
			return out, scanned, true, nil
		}
		var r Revocation
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, since, false, fmt.Errorf("store: revocation log %d: %w", binary.BigEndian.Uint64(k), err)
		}
		scanned = binary.BigEndian.Uint64(k)
		if tiers == nil || slices.Contains(tiers, r.Tier) {
			out = append(out, r)
		}
	}
	return out, scanned, false, nil
}
