// Package storetest opens real store files for tests and checks them when
// the test ends: the file must be a consistent bbolt database and its audit
// chain must verify.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
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
	if eps := os.Getenv(EnvEtcd); eps != "" && o.Path == "" && o.Etcd == nil && !o.ReadOnly {
		return mustOpenEtcd(t, o, strings.Split(eps, ","))
	}
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

// EnvEtcd, when set to a comma-separated list of etcd client URLs, makes
// MustOpen and MustOpenWith (without a Path) open the store on that
// cluster under a fresh prefix instead of a file: the store's own test
// suite then runs against the etcd engine (see ca/store's
// TestSuiteOnEtcd).
const EnvEtcd = "SSHWARD_TEST_STORE_ETCD"

// OnEtcd reports whether this run opens stores on etcd (EnvEtcd).
func OnEtcd() bool { return os.Getenv(EnvEtcd) != "" }

// BoltOnly skips a test that is about the bbolt file itself (locks,
// crashes, page trimming, bbolt transaction ids) in the etcd run.
func BoltOnly(t testing.TB) {
	t.Helper()
	if OnEtcd() {
		t.Skip("about the bbolt file; not part of the etcd run")
	}
}

func mustOpenEtcd(t testing.TB, o store.Options, endpoints []string) *store.DB {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	o.Etcd = &store.EtcdOptions{Endpoints: endpoints, Prefix: "storetest-" + hex.EncodeToString(b[:])}
	db, err := store.Open(context.Background(), o)
	if err != nil {
		t.Fatalf("storetest: open etcd: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("storetest: close: %v", err)
		}
		// As Check does for a file: the chain must verify, read afresh.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		again, err := store.Open(ctx, o)
		if err != nil {
			t.Errorf("storetest: check: %v", err)
			return
		}
		defer again.Close()
		if _, err := again.VerifyAudit(ctx); err != nil {
			t.Errorf("storetest: check %s: %v", again.Describe(), err)
		}
	})
	return db
}
