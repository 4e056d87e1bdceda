package ca_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/identity"
	"github.com/sshward/sshward/ca/store"
)

// TestUseWorkloadTokenReplay replays one CI token's jti against a real bbolt
// store: sequentially, from racing goroutines (exactly one may win), and
// after a restart of the store (the use must be remembered).
func TestUseWorkloadTokenReplay(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_900_000_000, 0)
	path := filepath.Join(t.TempDir(), "ca.db")
	db, err := store.Open(ctx, store.Options{Path: path, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	w := identity.Workload{Issuer: "https://ci.example.test", JTI: "j-1", Expiry: now.Add(5 * time.Minute)}

	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := ca.UseWorkloadToken(ctx, db, w); {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, ca.ErrWorkloadReplayed):
				t.Errorf("racing use: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d racing exchanges of one jti won, want exactly 1", wins.Load())
	}
	other := w
	other.Issuer = "https://other-ci.example.test"
	if err := ca.UseWorkloadToken(ctx, db, other); err != nil {
		t.Fatalf("same jti from another issuer refused: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = store.Open(ctx, store.Options{Path: path, Now: func() time.Time { return now.Add(time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := ca.UseWorkloadToken(ctx, db, w); !errors.Is(err, ca.ErrWorkloadReplayed) {
		t.Fatalf("replay after restart: err = %v, want ErrWorkloadReplayed", err)
	}
}
