package store_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

func TestRevocations(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	steps := []struct {
		name    string
		add     store.Revocation
		wantErr error
		tier    string
		want    store.RevocationSet
	}{
		{"unknown tier is empty", store.Revocation{}, nil, "staging", store.RevocationSet{}},
		{"serial", store.Revocation{Tier: "staging", Serial: 42, KeyID: "alice", Reason: "laptop lost", By: "root"}, nil,
			"staging", store.RevocationSet{Generation: 1, Serials: []uint64{42}}},
		{"lower serial sorts first", store.Revocation{Tier: "staging", Serial: 7}, nil,
			"staging", store.RevocationSet{Generation: 2, Serials: []uint64{7, 42}}},
		{"same serial again: no bump", store.Revocation{Tier: "staging", Serial: 42, Reason: "again"}, nil,
			"staging", store.RevocationSet{Generation: 2, Serials: []uint64{7, 42}}},
		{"key id", store.Revocation{Tier: "staging", KeyID: "mallory"}, nil,
			"staging", store.RevocationSet{Generation: 3, Serials: []uint64{7, 42}, KeyIDs: []string{"mallory"}}},
		{"key ids sorted", store.Revocation{Tier: "staging", KeyID: "eve"}, nil,
			"staging", store.RevocationSet{Generation: 4, Serials: []uint64{7, 42}, KeyIDs: []string{"eve", "mallory"}}},
		{"tiers are separate", store.Revocation{Tier: "production", Serial: 42}, nil,
			"production", store.RevocationSet{Generation: 1, Serials: []uint64{42}}},
		{"neither serial nor key id", store.Revocation{Tier: "staging"}, store.ErrInvalid,
			"staging", store.RevocationSet{Generation: 4, Serials: []uint64{7, 42}, KeyIDs: []string{"eve", "mallory"}}},
		{"no tier", store.Revocation{Serial: 1}, store.ErrInvalid,
			"staging", store.RevocationSet{Generation: 4, Serials: []uint64{7, 42}, KeyIDs: []string{"eve", "mallory"}}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.add != (store.Revocation{}) {
				err := db.Update(t.Context(), func(tx *store.Tx) error { return tx.AddRevocation(&st.add) })
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("add: %v, want %v", err, st.wantErr)
				}
				if err == nil && !st.add.At.Equal(t0) {
					t.Errorf("At not stamped: %v", st.add.At)
				}
			}
			mustView(t, db, func(tx *store.Tx) error {
				got, err := tx.Revocations(st.tier)
				if !reflect.DeepEqual(got, st.want) {
					t.Errorf("Revocations(%q) = %+v, want %+v", st.tier, got, st.want)
				}
				return err
			})
		})
	}
}

func TestMeta(t *testing.T) {
	db := storetest.MustOpen(t)
	mustUpdate(t, db, func(tx *store.Tx) error {
		if err := tx.PutMeta("playback_url", []byte("https://playback.example:8443")); err != nil {
			return err
		}
		return tx.PutMeta("empty", nil)
	})
	tests := []struct {
		key     string
		want    string
		wantErr error
	}{
		{"playback_url", "https://playback.example:8443", nil},
		{"empty", "", nil},
		{"missing", "", store.ErrNotFound},
		{"audit_head", "", store.ErrNotFound}, // the store's own bookkeeping is elsewhere
		{"", "", store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			mustView(t, db, func(tx *store.Tx) error {
				v, err := tx.GetMeta(tc.key)
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if err == nil && string(v) != tc.want {
					t.Errorf("GetMeta(%q) = %q, want %q", tc.key, v, tc.want)
				}
				return nil
			})
		})
	}
}
