package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

func TestOptionsCheck(t *testing.T) {
	tests := []struct {
		name  string
		o     store.Options
		field string // "" when valid
	}{
		{"zero but path", store.Options{Path: "x.db"}, ""},
		{"no path", store.Options{}, "Path"},
		{"negative batch", store.Options{Path: "x.db", MaxBatch: -1}, "MaxBatch"},
		{"huge batch", store.Options{Path: "x.db", MaxBatch: 1 << 20}, "MaxBatch"},
		{"negative timeout", store.Options{Path: "x.db", OpenTimeout: -time.Second}, "OpenTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Check()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			if !errors.Is(err, store.ErrInvalid) || !contains(err.Error(), tc.field) {
				t.Fatalf("Check = %v, want ErrInvalid naming %s", err, tc.field)
			}
		})
	}
}

func TestOpenLocked(t *testing.T) {
	storetest.BoltOnly(t)
	db := storetest.MustOpen(t)
	tests := []struct {
		name string
		o    store.Options
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"second writer", store.Options{Path: db.Path(), OpenTimeout: 50 * time.Millisecond}, nil},
		{"reader while a writer holds it", store.Options{Path: db.Path(), OpenTimeout: 50 * time.Millisecond, ReadOnly: true}, nil},
		{"context deadline shorter than OpenTimeout", store.Options{Path: db.Path(), OpenTimeout: time.Hour}, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if tc.ctx != nil {
				ctx, cancel = tc.ctx()
			}
			defer cancel()
			start := time.Now()
			db2, err := store.Open(ctx, tc.o)
			if err == nil {
				db2.Close()
			}
			if !errors.Is(err, store.ErrLocked) {
				t.Fatalf("Open = %v, want ErrLocked", err)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("Open took %v to give up", el)
			}
		})
	}
	t.Run("free again after Close", func(t *testing.T) {
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db2, err := store.Open(t.Context(), store.Options{Path: db.Path(), OpenTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		db2.Close()
	})
}

func TestReadOnly(t *testing.T) {
	storetest.BoltOnly(t)
	db := storetest.MustOpen(t)
	mustUpdate(t, db, func(tx *store.Tx) error { return tx.PutMeta("k", []byte("v")) })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	r1 := storetest.MustOpenWith(t, store.Options{Path: db.Path(), ReadOnly: true})
	r2 := storetest.MustOpenWith(t, store.Options{Path: db.Path(), ReadOnly: true}) // readers share the lock
	for _, r := range []*store.DB{r1, r2} {
		mustView(t, r, func(tx *store.Tx) error {
			v, err := tx.GetMeta("k")
			if string(v) != "v" {
				t.Errorf("GetMeta = %q", v)
			}
			return err
		})
	}
	if err := r1.Update(t.Context(), func(*store.Tx) error { return nil }); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("Update on read-only = %v, want ErrReadOnly", err)
	}
	if _, err := store.Open(t.Context(), store.Options{Path: filepath.Join(t.TempDir(), "missing.db"), ReadOnly: true}); err == nil {
		t.Error("read-only Open created a missing file")
	}
}

func TestFileMode(t *testing.T) {
	storetest.BoltOnly(t)
	t.Run("new file is 0600", func(t *testing.T) {
		db := storetest.MustOpen(t)
		fi, err := os.Stat(db.Path())
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode().Perm())
		}
	})
	t.Run("loose file is tightened", func(t *testing.T) {
		db := storetest.MustOpen(t)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(db.Path(), 0o644); err != nil {
			t.Fatal(err)
		}
		storetest.MustOpenWith(t, store.Options{Path: db.Path()})
		fi, err := os.Stat(db.Path())
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode().Perm())
		}
	})
}

func TestSnapshot(t *testing.T) {
	storetest.BoltOnly(t)
	db := storetest.MustOpen(t)
	appendEvents(t, db, 4)
	cp := filepath.Join(t.TempDir(), "snap.db")
	if err := db.Snapshot(t.Context(), cp); err != nil {
		t.Fatal(err)
	}
	// The live store keeps going; the snapshot is frozen and verifies.
	appendEvents(t, db, 1)
	rep, err := store.VerifyFile(t.Context(), cp)
	if err != nil || rep.Records != 4 {
		t.Fatalf("VerifyFile(snapshot) = %+v, %v", rep, err)
	}
	fi, err := os.Stat(cp)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot mode %v, %v", fi.Mode().Perm(), err)
	}
}
