package store

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Layout inside bucketRevoked: one bucket per tier holding
//
//	"generation" → uint64 BE, bumped whenever the set changes
//	"serial/"    → bucket: serial (uint64 BE) → JSON Revocation
//	"keyid/"     → bucket: key id → JSON Revocation
var (
	keyGeneration  = []byte("generation")
	bucketBySerial = []byte("serial/")
	bucketByKeyID  = []byte("keyid/")
)

// Revocation revokes one certificate serial or every certificate with one
// key id, within a tier (each tier has its own CA key and KRL).
type Revocation struct {
	Tier string `json:"tier"`
	// Serial revokes that serial when non-zero; KeyID is then kept only as
	// information. When Serial is 0, KeyID is what is revoked.
	Serial uint64    `json:"serial,omitzero"`
	KeyID  string    `json:"key_id,omitzero"`
	Reason string    `json:"reason,omitzero"`
	At     time.Time `json:"at"` // set by AddRevocation when zero
	By     string    `json:"by,omitzero"`
	// Notice, when set, is what the holder of a live session reads when
	// the revocation ends it (an on-call shift that ended); agents get it
	// with the revoke event. One sentence, no secret.
	Notice string `json:"notice,omitzero"`
	// Seq is the revocation's place in the store-wide revocation log (see
	// RevocationsSince), set by AddRevocation; 0 for revocations recorded
	// before the log existed.
	Seq uint64 `json:"seq,omitzero"`
}

// RevocationSet is what a tier's KRL is built from.
type RevocationSet struct {
	// Generation counts changes to the set; a KRL cache keyed by it is
	// never stale. It is 0 for a tier with no revocations.
	Generation uint64
	Serials    []uint64 // ascending
	KeyIDs     []string // ascending (byte order)
}

// AddRevocation adds r to its tier's set and bumps the tier's generation.
// Revoking what is already revoked changes nothing (the first record and
// the generation stay), so retries are harmless.
func (tx *Tx) AddRevocation(r *Revocation) error {
	const op = "add revocation"
	if err := checkName(op, "tier", r.Tier); err != nil {
		return err
	}
	if r.Serial == 0 {
		if err := checkName(op, "key id (serial is 0)", r.KeyID); err != nil {
			return err
		}
	}
	root, err := tx.writeBucket(op, bucketRevoked)
	if err != nil {
		return err
	}
	tb, err := root.CreateBucketIfNotExists([]byte(r.Tier))
	if err != nil {
		return fmt.Errorf("store: %s in tier %q: %w", op, r.Tier, err)
	}
	sub, key := bucketBySerial, serialKey(r.Serial)
	if r.Serial == 0 {
		sub, key = bucketByKeyID, []byte(r.KeyID)
	}
	b, err := tb.CreateBucketIfNotExists(sub)
	if err != nil {
		return fmt.Errorf("store: %s in tier %q: %w", op, r.Tier, err)
	}
	if r.At.IsZero() {
		r.At = tx.now()
	}
	if b.Get(key) != nil {
		return nil
	}
	if err := tx.logRevocation(root, r); err != nil {
		return fmt.Errorf("store: %s in tier %q: %w", op, r.Tier, err)
	}
	if err := putJSON(b, key, r); err != nil {
		return fmt.Errorf("store: %s in tier %q: %w", op, r.Tier, err)
	}
	gen := generation(tb) + 1
	if err := tb.Put(keyGeneration, binary.BigEndian.AppendUint64(nil, gen)); err != nil {
		return fmt.Errorf("store: %s in tier %q: %w", op, r.Tier, err)
	}
	return nil
}

func generation(tb kvBucket) uint64 {
	if v := tb.Get(keyGeneration); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// Revocations returns the tier's revocation set; an unknown tier has an
// empty set with generation 0.
func (tx *Tx) Revocations(tier string) (RevocationSet, error) {
	var set RevocationSet
	root := tx.bucket(bucketRevoked)
	if root == nil {
		return set, nil
	}
	tb := root.Bucket([]byte(tier))
	if tb == nil {
		return set, nil
	}
	set.Generation = generation(tb)
	if b := tb.Bucket(bucketBySerial); b != nil {
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) != 8 {
				return RevocationSet{}, fmt.Errorf("store: revocations of tier %q: malformed serial key: %w", tier, ErrInvalid)
			}
			set.Serials = append(set.Serials, binary.BigEndian.Uint64(k))
		}
	}
	if b := tb.Bucket(bucketByKeyID); b != nil {
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			set.KeyIDs = append(set.KeyIDs, string(k))
		}
	}
	return set, nil
}
