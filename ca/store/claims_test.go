package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

// TestClaimSerialRace: many hosts claim the same single-use serial at
// once, through group-committed Updates that share transactions; exactly
// one wins, every other caller sees ErrClaimed and the winner's record.
func TestClaimSerialRace(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	for round := range 20 {
		serial := uint64(1000 + round)
		const hosts = 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		won, refused := []string{}, 0
		start := make(chan struct{})
		for h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				host := fmt.Sprintf("db%d.prod", h)
				var prev *store.Claim
				err := db.Update(context.Background(), func(tx *store.Tx) error {
					var err error
					prev, err = tx.ClaimSerial(&store.Claim{Serial: serial, Host: host, SessionID: "conn-" + host, ExpiresAt: t0.Add(time.Hour)})
					if errors.Is(err, store.ErrClaimed) {
						return nil // refused: recorded as such by the caller, not an Update failure
					}
					prev = nil
					return err
				})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Errorf("round %d host %s: %v", round, host, err)
				case prev == nil:
					won = append(won, host)
				default:
					refused++
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(won) != 1 || refused != hosts-1 {
			t.Fatalf("round %d: winners %v, refused %d; want exactly one winner", round, won, refused)
		}
		mustView(t, db, func(tx *store.Tx) error {
			c, err := tx.GetClaim(serial)
			if err != nil || c.Host != won[0] || c.SessionID != "conn-"+won[0] || !c.ClaimedAt.Equal(t0) {
				t.Errorf("round %d: stored claim %+v, %v; want %s's", round, c, err, won[0])
			}
			return nil
		})
	}
}

// TestClaimSerialDurableAndPruned: a claim survives closing and reopening
// the file, a failed closure leaves none, and expired claims are pruned
// oldest first without touching those in force.
func TestClaimSerialDurableAndPruned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.db")
	db, err := store.Open(context.Background(), store.Options{Path: path, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	claim := func(db *store.DB, serial uint64, host string, exp time.Time) error {
		return db.Update(context.Background(), func(tx *store.Tx) error {
			_, err := tx.ClaimSerial(&store.Claim{Serial: serial, Host: host, SessionID: "s-" + host, ExpiresAt: exp})
			return err
		})
	}
	if err := claim(db, 7, "db1.prod", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A closure that claims and then fails keeps nothing.
	boom := errors.New("boom")
	if err := db.Update(context.Background(), func(tx *store.Tx) error {
		if _, err := tx.ClaimSerial(&store.Claim{Serial: 8, Host: "db1.prod", SessionID: "x", ExpiresAt: t0.Add(time.Hour)}); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("failing closure: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = store.Open(context.Background(), store.Options{Path: path, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := claim(db, 7, "db2.prod", t0.Add(time.Hour)); !errors.Is(err, store.ErrClaimed) {
		t.Fatalf("second claim after reopen: %v, want ErrClaimed", err)
	}
	if err := claim(db, 8, "db2.prod", t0.Add(time.Hour)); err != nil {
		t.Fatalf("serial of the failed closure: %v", err)
	}
	for _, bad := range []store.Claim{{Host: "h", SessionID: "s", ExpiresAt: t0}, {Serial: 1, SessionID: "s", ExpiresAt: t0}, {Serial: 1, Host: "h", ExpiresAt: t0}, {Serial: 1, Host: "h", SessionID: "s"}} {
		err := db.Update(context.Background(), func(tx *store.Tx) error { _, err := tx.ClaimSerial(&bad); return err })
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("claim %+v: %v, want ErrInvalid", bad, err)
		}
	}
	// Prune: 1 and 2 expired, 3 in force, 4 expired but after 3 (kept until a later pass).
	for s, exp := range map[uint64]time.Time{1: t0.Add(-time.Hour), 2: t0, 3: t0.Add(time.Minute), 4: t0.Add(-time.Minute)} {
		if err := claim(db, 100+s, "h", exp); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	mustUpdate(t, db, func(tx *store.Tx) (err error) { n, err = tx.DeleteExpiredClaims(t0, 10); return err })
	// Serials 7 and 8 (in force) come before 101: the pass stops at 7.
	if n != 0 {
		t.Fatalf("pruned %d claims before the first one in force, want 0", n)
	}
	mustUpdate(t, db, func(tx *store.Tx) (err error) { n, err = tx.DeleteExpiredClaims(t0.Add(2*time.Hour), 2); return err })
	if n != 2 {
		t.Fatalf("pruned %d, want the limit 2", n)
	}
	mustView(t, db, func(tx *store.Tx) error {
		for s, want := range map[uint64]bool{7: false, 8: false, 101: true, 102: true} {
			_, err := tx.GetClaim(s)
			if gotThere := err == nil; gotThere != want {
				t.Errorf("claim %d present %v, want %v (%v)", s, gotThere, want, err)
			}
		}
		return nil
	})
}
