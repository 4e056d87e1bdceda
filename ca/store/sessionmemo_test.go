package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

// TestSessionNotRevokedFollowsEveryChange: the memoised liveness check
// answers like GetSession after each way a session changes — revoked in a
// later transaction, revoked earlier in the same transaction, revoked for
// the whole user, deleted, re-created — once it has memoised "live".
func TestSessionNotRevokedFollowsEveryChange(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	exp := t0.Add(time.Hour)
	s := &store.Session{ID: id("m1"), User: "alice", Groups: []string{"sre"}, ExpiresAt: exp}
	put := func(tx *store.Tx) error { c := *s; return tx.PutSession(&c) }
	check := func(tx *store.Tx, want bool, what string) {
		t.Helper()
		got, err := tx.SessionNotRevoked(s.ID)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		ref, err := tx.GetSession(s.ID)
		refLive := err == nil && ref.RevokedAt.IsZero()
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		if got != want || got != refLive {
			t.Errorf("%s: SessionNotRevoked = %v, GetSession says live=%v, want %v", what, got, refLive, want)
		}
	}
	mustUpdate(t, db, put)
	for range 2 { // the second time from the memo
		mustView(t, db, func(tx *store.Tx) error { check(tx, true, "fresh session"); return nil })
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		check(tx, true, "before revocation in the same transaction")
		c := *s
		c.RevokedAt = t0
		if err := tx.PutSession(&c); err != nil {
			return err
		}
		check(tx, false, "after revocation in the same transaction")
		return nil
	})
	mustView(t, db, func(tx *store.Tx) error { check(tx, false, "revoked session"); return nil })

	mustUpdate(t, db, put) // re-created live
	mustView(t, db, func(tx *store.Tx) error { check(tx, true, "re-created session"); return nil })
	mustUpdate(t, db, func(tx *store.Tx) error {
		if n, err := tx.RevokeUserSessions("alice", t0); err != nil || n != 1 {
			t.Fatalf("RevokeUserSessions = %d, %v", n, err)
		}
		check(tx, false, "after RevokeUserSessions")
		return nil
	})
	mustUpdate(t, db, put)
	mustView(t, db, func(tx *store.Tx) error { check(tx, true, "live again"); return nil })
	mustUpdate(t, db, func(tx *store.Tx) error {
		if n, err := tx.DeleteExpiredSessions(exp); err != nil || n != 1 {
			t.Fatalf("DeleteExpiredSessions = %d, %v", n, err)
		}
		check(tx, false, "deleted")
		return nil
	})
	mustView(t, db, func(tx *store.Tx) error {
		if ok, err := tx.SessionNotRevoked(id("never")); ok || err != nil {
			t.Errorf("unknown session: %v, %v", ok, err)
		}
		return nil
	})
}
