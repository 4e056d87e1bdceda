package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
)

// t0 is the fixed clock of most tests.
var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

func mustUpdate(t testing.TB, db *store.DB, fn func(*store.Tx) error) {
	t.Helper()
	if err := db.Update(context.Background(), fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func mustView(t testing.TB, db *store.DB, fn func(*store.Tx) error) {
	t.Helper()
	if err := db.View(context.Background(), fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

// id returns a valid token id for a test token name.
func id(name string) string { return store.TokenID("token-" + name) }
