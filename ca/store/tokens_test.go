package store_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

func TestJoinTokens(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	exp := t0.Add(time.Hour)
	mustUpdate(t, db, func(tx *store.Tx) error {
		for _, tok := range []*store.JoinToken{
			{ID: id("web1"), Kind: store.JoinKindHost, Names: []string{"web1.staging.example.com"}, Tier: "staging", ExpiresAt: exp, CreatedBy: "root"},
			{ID: id("pb"), Kind: store.JoinKindPlayback, Names: []string{"playback"}, ExpiresAt: exp},
		} {
			if err := tx.PutJoinToken(tok); err != nil {
				return err
			}
		}
		return nil
	})

	consume := func(name string, now time.Time) (*store.JoinToken, error) {
		var tok *store.JoinToken
		err := db.Update(t.Context(), func(tx *store.Tx) (err error) {
			tok, err = tx.ConsumeJoinToken(id(name), now)
			return err
		})
		return tok, err
	}
	tests := []struct {
		name    string
		token   string
		now     time.Time
		wantErr error
	}{
		{"unknown", "nope", t0, store.ErrNotFound},
		{"expired", "pb", exp, store.ErrTokenExpired},
		{"first use", "web1", t0.Add(time.Minute), nil},
		{"second use", "web1", t0.Add(2 * time.Minute), store.ErrTokenUsed},
		{"expired playback token stays unused", "pb", exp.Add(time.Second), store.ErrTokenExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := consume(tc.token, tc.now)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && (!tok.UsedAt.Equal(tc.now) || tok.Tier != "staging" || !slices.Equal(tok.Names, []string{"web1.staging.example.com"}) || !tok.CreatedAt.Equal(t0)) {
				t.Errorf("consumed token %+v", tok)
			}
		})
	}

	t.Run("put refuses", func(t *testing.T) {
		tests := []struct {
			name string
			tok  store.JoinToken
			want error
		}{
			{"existing id, even used", store.JoinToken{ID: id("web1"), Kind: store.JoinKindHost, ExpiresAt: exp}, store.ErrExists},
			{"raw token", store.JoinToken{ID: "hunter2", Kind: store.JoinKindHost, ExpiresAt: exp}, store.ErrInvalid},
			{"bad kind", store.JoinToken{ID: id("k"), Kind: "user", ExpiresAt: exp}, store.ErrInvalid},
			{"no expiry", store.JoinToken{ID: id("k"), Kind: store.JoinKindHost}, store.ErrInvalid},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				err := db.Update(t.Context(), func(tx *store.Tx) error { return tx.PutJoinToken(&tc.tok) })
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
			})
		}
		if _, err := consume("web1", t0); !errors.Is(err, store.ErrTokenUsed) {
			t.Errorf("used token revived: %v", err)
		}
	})

	t.Run("racing joins: exactly one wins", func(t *testing.T) {
		mustUpdate(t, db, func(tx *store.Tx) error {
			return tx.PutJoinToken(&store.JoinToken{ID: id("race"), Kind: store.JoinKindHost, ExpiresAt: exp})
		})
		const n = 16
		errs := make(chan error, n)
		for range n {
			go func() { _, err := consume("race", t0); errs <- err }()
		}
		won := 0
		for range n {
			switch err := <-errs; {
			case err == nil:
				won++
			case !errors.Is(err, store.ErrTokenUsed):
				t.Errorf("unexpected error %v", err)
			}
		}
		if won != 1 {
			t.Errorf("%d joins succeeded, want 1", won)
		}
	})
}
