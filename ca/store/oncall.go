package store

import (
	"encoding/binary"
	"fmt"
	"time"
)

// bucketOnCall holds the certificates granted through on-call: serial
// (uint64 BE) → JSON OnCallGrant. It is listed in allBuckets (db.go) so
// Open creates it. The CA reads it at start and at every shift end to
// revoke what a finished shift left behind (ca/oncall.go); records leave
// once their certificate expired and was dealt with.
var bucketOnCall = []byte("oncall_grants")

// OnCallGrant is a certificate issued because its holder was on call, with
// the shift that granted it.
type OnCallGrant struct {
	Serial      uint64    `json:"serial"`
	KeyID       string    `json:"key_id"`
	Tier        string    `json:"tier"`
	User        string    `json:"user"`
	Rotation    string    `json:"rotation,omitzero"`
	ShiftStart  time.Time `json:"shift_start"`
	ShiftEnd    time.Time `json:"shift_end"`
	ValidBefore time.Time `json:"valid_before"`
	// Notice is set once the shift end revoked the certificate: what its
	// holder reads; revocation lists carry it until the record leaves.
	Notice string `json:"notice,omitzero"`
}

// PutOnCallGrant records g, in the transaction that records its certificate.
func (tx *Tx) PutOnCallGrant(g *OnCallGrant) error {
	const op = "put on-call grant"
	if g.Serial == 0 {
		return fmt.Errorf("store: %s: serial is zero: %w", op, ErrInvalid)
	}
	for _, f := range [...]struct{ name, v string }{{"tier", g.Tier}, {"user", g.User}} {
		if err := checkName(op, f.name, f.v); err != nil {
			return err
		}
	}
	b, err := tx.writeBucket(op, bucketOnCall)
	if err != nil {
		return err
	}
	if err := putJSON(b, serialKey(g.Serial), g); err != nil {
		return fmt.Errorf("store: %s %d: %w", op, g.Serial, err)
	}
	return nil
}

// OnCallGrants returns every recorded on-call grant, by serial.
func (tx *Tx) OnCallGrants() ([]OnCallGrant, error) {
	var out []OnCallGrant
	err := forEachJSON(tx.bucket(bucketOnCall), func(k []byte, g *OnCallGrant) error {
		if len(k) != 8 || binary.BigEndian.Uint64(k) != g.Serial {
			return fmt.Errorf("malformed key: %w", ErrInvalid)
		}
		out = append(out, *g)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: on-call grants: %w", err)
	}
	return out, nil
}

// DeleteOnCallGrant forgets the grant of serial (absent: no-op).
func (tx *Tx) DeleteOnCallGrant(serial uint64) error {
	b, err := tx.writeBucket("delete on-call grant", bucketOnCall)
	if err != nil {
		return err
	}
	if err := b.Delete(serialKey(serial)); err != nil {
		return fmt.Errorf("store: delete on-call grant %d: %w", serial, err)
	}
	return nil
}

// IsRevoked reports whether serial is revoked in tier.
func (tx *Tx) IsRevoked(tier string, serial uint64) bool {
	root := tx.bucket(bucketRevoked)
	if root == nil {
		return false
	}
	tb := root.Bucket([]byte(tier))
	if tb == nil {
		return false
	}
	b := tb.Bucket(bucketBySerial)
	return b != nil && b.Get(serialKey(serial)) != nil
}
