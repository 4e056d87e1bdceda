// Package storetest opens real store files for tests and checks them when
// the test ends: the file must be a consistent bbolt database and its audit
// chain must verify.
package storetest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	bolt "go.etcd.io/bbolt"
)

// MustOpen opens a fresh store in t.TempDir(). On cleanup it closes the
// store (waiting for queued writes) and fails the test if the file is
// inconsistent or the audit chain is broken (see Check).
func MustOpen(t testing.TB) *store.DB {
	t.Helper()
	return MustOpenWith(t, store.Options{})
}

// MustOpenWith is MustOpen with options; an empty o.Path means a fresh
// file in t.TempDir(). Closing the DB in the test is fine: Close is
// idempotent.
func MustOpenWith(t testing.TB, o store.Options) *store.DB {
	t.Helper()
	if o.Path == "" {
		o.Path = filepath.Join(t.TempDir(), "ca.db")
	}
	db, err := store.Open(context.Background(), o)
	if err != nil {
		t.Fatalf("storetest: open %s: %v", o.Path, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("storetest: close: %v", err)
		}
		Check(t, o.Path)
	})
	return db
}

// Check fails t if the closed store at path is not a consistent bbolt file
// or its audit chain does not verify.
func Check(t testing.TB, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Errorf("storetest: check %s: %v", path, err)
		return
	}
	err = bdb.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("storetest: check %s: bbolt: %v", path, err)
		}
		return nil
	})
	if cerr := bdb.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Errorf("storetest: check %s: %v", path, err)
	}
	if _, err := store.VerifyFile(ctx, path); err != nil {
		t.Errorf("storetest: check %s: %v", path, err)
	}
}
