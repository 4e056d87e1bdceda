package store_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

func TestUsers(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	alice := &store.User{Name: "alice", Groups: []string{"sre", "engineers"}, PasswordHash: "$argon2id$v=19$x", TOTPSecret: "JBSWY3DPEHPK3PXP", TOTPLastStep: 7}
	mustUpdate(t, db, func(tx *store.Tx) error {
		if err := tx.PutUser(alice); err != nil {
			return err
		}
		return tx.PutUser(&store.User{Name: "bob"})
	})
	if !alice.CreatedAt.Equal(t0) || !alice.UpdatedAt.Equal(t0) {
		t.Errorf("PutUser stamps: created %v updated %v, want %v", alice.CreatedAt, alice.UpdatedAt, t0)
	}

	tests := []struct {
		name    string
		write   bool // run in Update rather than View
		fn      func(tx *store.Tx) (any, error)
		want    any
		wantErr error
	}{
		{"get", false, func(tx *store.Tx) (any, error) { return tx.GetUser("alice") }, alice, nil},
		{"get missing", false, func(tx *store.Tx) (any, error) { return tx.GetUser("carol") }, nil, store.ErrNotFound},
		{"get empty name", false, func(tx *store.Tx) (any, error) { return tx.GetUser("") }, nil, store.ErrNotFound},
		{"list sorted", false, func(tx *store.Tx) (any, error) {
			us, err := tx.ListUsers()
			names := []string{}
			for _, u := range us {
				names = append(names, u.Name)
			}
			return names, err
		}, []string{"alice", "bob"}, nil},
		{"put empty name", false, func(tx *store.Tx) (any, error) { return nil, tx.PutUser(&store.User{}) }, nil, store.ErrInvalid},
		{"put in view", false, func(tx *store.Tx) (any, error) { return nil, tx.PutUser(&store.User{Name: "x"}) }, nil, store.ErrReadOnly},
		{"delete missing", true, func(tx *store.Tx) (any, error) { return nil, tx.DeleteUser("carol") }, nil, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := mustView
			if tc.write {
				run = mustUpdate
			}
			run(t, db, func(tx *store.Tx) error {
				got, err := tc.fn(tx)
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if tc.want != nil && !reflect.DeepEqual(got, tc.want) {
					t.Errorf("got %+v, want %+v", got, tc.want)
				}
				return nil
			})
		})
	}

	t.Run("update keeps CreatedAt", func(t *testing.T) {
		mustUpdate(t, db, func(tx *store.Tx) error {
			u, err := tx.GetUser("alice")
			if err != nil {
				return err
			}
			u.Failures = 3
			return tx.PutUser(u)
		})
		mustView(t, db, func(tx *store.Tx) error {
			u, err := tx.GetUser("alice")
			if err != nil {
				return err
			}
			if u.Failures != 3 || !u.CreatedAt.Equal(t0) || u.PasswordHash != alice.PasswordHash {
				t.Errorf("after update: %+v", u)
			}
			return nil
		})
	})
	t.Run("delete", func(t *testing.T) {
		mustUpdate(t, db, func(tx *store.Tx) error { return tx.DeleteUser("bob") })
		mustView(t, db, func(tx *store.Tx) error {
			if _, err := tx.GetUser("bob"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("get deleted user: %v, want ErrNotFound", err)
			}
			return nil
		})
	})
	t.Run("secrets stay out of errors", func(t *testing.T) {
		err := db.View(t.Context(), func(tx *store.Tx) error { return tx.PutUser(alice) })
		if err == nil {
			t.Fatal("PutUser in View succeeded")
		}
		for _, s := range []string{alice.PasswordHash, alice.TOTPSecret} {
			if contains(err.Error(), s) {
				t.Errorf("error %q contains a secret", err)
			}
		}
	})
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
