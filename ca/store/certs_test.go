package store_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

func serials(cs []store.CertRecord) []uint64 {
	out := []uint64{}
	for _, c := range cs {
		out = append(out, c.Serial)
	}
	return out
}

func TestCerts(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	mk := func(serial uint64, keyID, kind, tier, ident string, issued time.Time) *store.CertRecord {
		return &store.CertRecord{Serial: serial, KeyID: keyID, Kind: kind, Tier: tier, Identity: ident,
			Principals: []string{ident}, ValidAfter: issued.Add(-time.Minute), ValidBefore: issued.Add(time.Hour),
			IssuedAt: issued, PublicKeyFP: "SHA256:abc", RequestID: "", ClientAddr: "192.0.2.7"}
	}
	seed := []*store.CertRecord{
		mk(5, "alice", store.CertKindUser, "staging", "alice", t0),
		mk(1<<63+1, "alice", store.CertKindUser, "production", "alice", t0.Add(2*time.Hour)),
		mk(9, "alice2", store.CertKindUser, "staging", "alice2", t0),
		mk(7, "host:web1", store.CertKindHost, "staging", "web1", t0.Add(time.Hour)),
		{Serial: 3, KeyID: "a", Kind: store.CertKindUser, ValidBefore: t0}, // IssuedAt stamped
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		for _, c := range seed {
			if err := tx.PutCert(c); err != nil {
				return err
			}
		}
		return nil
	})
	if !seed[4].IssuedAt.Equal(t0) {
		t.Errorf("IssuedAt not stamped: %v", seed[4].IssuedAt)
	}

	t.Run("put refuses", func(t *testing.T) {
		tests := []struct {
			name string
			c    store.CertRecord
			want error
		}{
			{"duplicate serial", *mk(5, "other", store.CertKindUser, "", "", t0), store.ErrDuplicateSerial},
			{"serial zero", *mk(0, "x", store.CertKindUser, "", "", t0), store.ErrInvalid},
			{"no key id", *mk(11, "", store.CertKindUser, "", "", t0), store.ErrInvalid},
			{"bad kind", *mk(11, "x", "robot", "", "", t0), store.ErrInvalid},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				err := db.Update(t.Context(), func(tx *store.Tx) error { return tx.PutCert(&tc.c) })
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
			})
		}
		mustView(t, db, func(tx *store.Tx) error {
			c, err := tx.GetCert(5)
			if err == nil && c.KeyID != "alice" {
				t.Errorf("duplicate overwrote serial 5: %+v", c)
			}
			if cs, _ := tx.CertsByKeyID("other"); len(cs) != 0 {
				t.Errorf("refused cert left an index entry: %v", serials(cs))
			}
			return err
		})
	})

	t.Run("get", func(t *testing.T) {
		mustView(t, db, func(tx *store.Tx) error {
			c, err := tx.GetCert(7)
			if err != nil {
				return err
			}
			want := seed[3]
			if c.KeyID != want.KeyID || c.Kind != store.CertKindHost || !slices.Equal(c.Principals, want.Principals) ||
				!c.ValidBefore.Equal(want.ValidBefore) || c.PublicKeyFP != want.PublicKeyFP || c.ClientAddr != want.ClientAddr {
				t.Errorf("got %+v, want %+v", c, want)
			}
			if _, err := tx.GetCert(8); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("missing serial: %v, want ErrNotFound", err)
			}
			max, err := tx.MaxSerial()
			if max != 1<<63+1 {
				t.Errorf("MaxSerial = %d", max)
			}
			return err
		})
	})

	tests := []struct {
		name string
		fn   func(tx *store.Tx) ([]store.CertRecord, error)
		want []uint64
	}{
		{"by key id", func(tx *store.Tx) ([]store.CertRecord, error) { return tx.CertsByKeyID("alice") }, []uint64{5, 1<<63 + 1}},
		{"by key id, longer id sharing a prefix", func(tx *store.Tx) ([]store.CertRecord, error) { return tx.CertsByKeyID("alice2") }, []uint64{9}},
		{"by key id, none", func(tx *store.Tx) ([]store.CertRecord, error) { return tx.CertsByKeyID("ali") }, []uint64{}},
		{"list all", func(tx *store.Tx) ([]store.CertRecord, error) { return tx.ListCerts(store.CertFilter{}) }, []uint64{3, 5, 7, 9, 1<<63 + 1}},
		{"kind host", func(tx *store.Tx) ([]store.CertRecord, error) {
			return tx.ListCerts(store.CertFilter{Kind: store.CertKindHost})
		}, []uint64{7}},
		{"tier and identity", func(tx *store.Tx) ([]store.CertRecord, error) {
			return tx.ListCerts(store.CertFilter{Tier: "staging", Identity: "alice"})
		}, []uint64{5}},
		{"valid at", func(tx *store.Tx) ([]store.CertRecord, error) {
			return tx.ListCerts(store.CertFilter{ValidAt: t0.Add(90 * time.Minute)})
		}, []uint64{7}},
		{"valid at is exclusive of ValidBefore", func(tx *store.Tx) ([]store.CertRecord, error) {
			return tx.ListCerts(store.CertFilter{ValidAt: t0.Add(time.Hour), Kind: store.CertKindHost})
		}, []uint64{7}},
		{"issued since", func(tx *store.Tx) ([]store.CertRecord, error) {
			return tx.ListCerts(store.CertFilter{IssuedSince: t0.Add(time.Hour)})
		}, []uint64{7, 1<<63 + 1}},
		{"page", func(tx *store.Tx) ([]store.CertRecord, error) {
			return tx.ListCerts(store.CertFilter{AfterSerial: 5, Limit: 2})
		}, []uint64{7, 9}},
		{"page after a missing serial", func(tx *store.Tx) ([]store.CertRecord, error) {
			return tx.ListCerts(store.CertFilter{AfterSerial: 6, Limit: 1})
		}, []uint64{7}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mustView(t, db, func(tx *store.Tx) error {
				got, err := tc.fn(tx)
				if !slices.Equal(serials(got), tc.want) {
					t.Errorf("serials %v, want %v", serials(got), tc.want)
				}
				return err
			})
		})
	}
}
