package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/store"
)

// Several CA replicas on one shared store (etcd) each run a Dispatcher
// over the same audit log and the same cursors. Left alone, every replica
// would deliver every event (N copies) and their cursor saves would move
// the cursor back and forth. So on a shared store each notifier has one
// owner at a time: a record in the store's meta naming the replica and
// until when it holds the notifier, taken and renewed in store
// transactions (serializable: two replicas cannot both take it). Only the
// owner delivers; a new owner starts from the saved cursor. An owner that
// dies is replaced once its record runs out (ownerTTL): delivery stays
// at-least-once, as on one CA. Cursors only ever move forward.

// ownerTTL is how long an ownership record holds without renewal.
const ownerTTL = 10 * time.Second

// OwnerKey is the store meta key naming a notifier's current owner.
func OwnerKey(name string) string { return "notify.owner." + name }

// owner keeps this dispatcher's claim on the notifier; it reports whether
// this dispatcher may deliver, and fresh when it just became the owner
// (its cursor must be read again).
type owner struct {
	id      string
	held    bool
	renewed time.Time
}

func newOwner() *owner {
	var b [8]byte
	rand.Read(b[:])
	return &owner{id: hex.EncodeToString(b[:])}
}

// hold takes or renews the ownership of name when due.
func (o *owner) hold(ctx context.Context, db *store.DB, name string) (may, fresh bool, err error) {
	now := time.Now()
	if o.held && now.Sub(o.renewed) < ownerTTL/3 {
		return true, false, nil
	}
	var got bool
	err = db.Update(ctx, func(tx *store.Tx) error {
		got = false
		v, err := tx.GetMeta(OwnerKey(name))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err == nil {
			id, until, _ := strings.Cut(string(v), " ")
			n, _ := strconv.ParseInt(until, 10, 64)
			if id != o.id && now.UnixNano() < n {
				return nil // another replica delivers
			}
		}
		got = true
		return tx.PutMeta(OwnerKey(name), fmt.Appendf(nil, "%s %d", o.id, now.Add(ownerTTL).UnixNano()))
	})
	if err != nil {
		o.held = false
		return false, false, err
	}
	fresh = got && !o.held
	o.held, o.renewed = got, now
	return got, fresh, nil
}

// advanceCursor writes cursor unless the stored one is already past it.
func advanceCursor(tx *store.Tx, name string, cursor uint64) error {
	if v, err := tx.GetMeta(CursorKey(name)); err == nil {
		if cur, err := strconv.ParseUint(string(v), 10, 64); err == nil && cur >= cursor {
			return nil
		}
	}
	return tx.PutMeta(CursorKey(name), []byte(strconv.FormatUint(cursor, 10)))
}
