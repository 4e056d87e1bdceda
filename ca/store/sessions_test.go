package store_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

func TestSessions(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	exp := t0.Add(12 * time.Hour)
	seed := []*store.Session{
		{ID: id("a1"), User: "alice", Groups: []string{"sre"}, MFA: true, Source: "local", ExpiresAt: exp, ClientAddr: "192.0.2.1"},
		{ID: id("a2"), User: "alice", ExpiresAt: exp},
		{ID: id("a3"), User: "alice", ExpiresAt: exp, RevokedAt: t0.Add(-time.Minute)},
		{ID: id("b1"), User: "bob", ExpiresAt: t0.Add(time.Hour)},
		{ID: id("b2"), User: "bob", ExpiresAt: t0.Add(-time.Hour)},
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		for _, s := range seed {
			if err := tx.PutSession(s); err != nil {
				return err
			}
		}
		return nil
	})

	t.Run("get", func(t *testing.T) {
		mustView(t, db, func(tx *store.Tx) error {
			s, err := tx.GetSession(id("a1"))
			if err != nil {
				return err
			}
			if s.User != "alice" || !s.MFA || s.Source != "local" || !s.CreatedAt.Equal(t0) || !s.ExpiresAt.Equal(exp) || s.ClientAddr != "192.0.2.1" || !slices.Equal(s.Groups, []string{"sre"}) {
				t.Errorf("got %+v", s)
			}
			if !s.Active(t0) || s.Active(exp) {
				t.Errorf("Active: want true at t0 and false at expiry")
			}
			if _, err := tx.GetSession(id("zz")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("missing session: %v, want ErrNotFound", err)
			}
			all, err := tx.ListSessions()
			if len(all) != len(seed) {
				t.Errorf("ListSessions: %d sessions, want %d", len(all), len(seed))
			}
			return err
		})
	})

	t.Run("put refuses", func(t *testing.T) {
		tests := []struct {
			name string
			s    store.Session
		}{
			{"raw token as id", store.Session{ID: "s3cr3t-token", User: "alice", ExpiresAt: exp}},
			{"uppercase hex id", store.Session{ID: "AB" + id("x")[2:], User: "alice", ExpiresAt: exp}},
			{"no user", store.Session{ID: id("x"), ExpiresAt: exp}},
			{"no expiry", store.Session{ID: id("x"), User: "alice"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				err := db.Update(t.Context(), func(tx *store.Tx) error { return tx.PutSession(&tc.s) })
				if !errors.Is(err, store.ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				if contains(err.Error(), "s3cr3t") {
					t.Errorf("error %q shows the token", err)
				}
			})
		}
	})

	t.Run("revoke user sessions", func(t *testing.T) {
		at := t0.Add(time.Minute)
		var n int
		mustUpdate(t, db, func(tx *store.Tx) (err error) {
			n, err = tx.RevokeUserSessions("alice", at)
			return err
		})
		if n != 2 {
			t.Errorf("revoked %d, want 2 (a3 was revoked already)", n)
		}
		mustView(t, db, func(tx *store.Tx) error {
			for _, tc := range []struct {
				id   string
				want time.Time
			}{{"a1", at}, {"a2", at}, {"a3", t0.Add(-time.Minute)}, {"b1", time.Time{}}} {
				s, err := tx.GetSession(id(tc.id))
				if err != nil {
					return err
				}
				if !s.RevokedAt.Equal(tc.want) {
					t.Errorf("%s: RevokedAt %v, want %v", tc.id, s.RevokedAt, tc.want)
				}
			}
			return nil
		})
	})

	t.Run("delete expired", func(t *testing.T) {
		var n int
		mustUpdate(t, db, func(tx *store.Tx) (err error) {
			n, err = tx.DeleteExpiredSessions(t0.Add(time.Hour)) // b2 expired, b1 expires exactly now
			return err
		})
		if n != 2 {
			t.Errorf("deleted %d, want 2", n)
		}
		mustView(t, db, func(tx *store.Tx) error {
			all, err := tx.ListSessions()
			var users []string
			for _, s := range all {
				users = append(users, s.User)
			}
			if len(all) != 3 || slices.Contains(users, "bob") {
				t.Errorf("left %v, want alice's three", users)
			}
			return err
		})
	})
}
