package ca_test

import (
	"context"
	"testing"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

// A session that ended must be refused at once, even though live sessions
// are cached in memory.
func TestEndedSessionsAreRefusedImmediately(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		end  func(w *catest.CA, c interface{ Logout(context.Context) error }) error
	}{
		{"logout", func(w *catest.CA, c interface{ Logout(context.Context) error }) error { return c.Logout(ctx) }},
		{"revoke user", func(w *catest.CA, _ interface{ Logout(context.Context) error }) error {
			_, err := w.Authority.Revoke(ctx, ca.RevokeRequest{User: "alice", Reason: "left"})
			return err
		}},
		{"remove user", func(w *catest.CA, _ interface{ Logout(context.Context) error }) error {
			return w.Authority.RemoveUser(ctx, "alice", "test")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := catest.New(t, catest.Options{})
			w.AddUser(t, "alice", pw, []string{"engineers"}, false)
			c := w.Client(t, w.Login(t, "alice", pw, ""))
			for range 3 { // warm the cache
				if _, err := c.Session(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := tc.end(w, c); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Session(ctx); !api.IsCode(err, api.CodeUnauthenticated) {
				t.Fatalf("ended session still accepted: %v", err)
			}
		})
	}
}
