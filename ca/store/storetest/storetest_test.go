package storetest_test

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
	bolt "go.etcd.io/bbolt"
)

// recorder captures failures instead of failing the real test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		tamper   bool
		wantFail bool
	}{
		{"intact store passes", false, false},
		{"deleted audit record fails", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inner := &recorder{TB: t}
			db := storetest.MustOpenWith(inner, store.Options{})
			for i := range 3 {
				err := db.Update(t.Context(), func(tx *store.Tx) error {
					return tx.AppendAudit(&store.AuditEvent{Type: "test", Serial: uint64(i)})
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.tamper {
				bdb, err := bolt.Open(db.Path(), 0o600, &bolt.Options{Timeout: time.Second})
				if err != nil {
					t.Fatal(err)
				}
				err = bdb.Update(func(tx *bolt.Tx) error {
					return tx.Bucket([]byte("audit")).Delete(binary.BigEndian.AppendUint64(nil, 2))
				})
				if cerr := bdb.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			storetest.Check(inner, db.Path())
			if failed := len(inner.errs) > 0; failed != tc.wantFail {
				t.Errorf("Check reported %q, want failure %v", inner.errs, tc.wantFail)
			}
		})
	}
}
