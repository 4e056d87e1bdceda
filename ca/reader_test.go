package ca_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

// TestReaderTokenCannotMint is a stolen reader token (what the playback
// server and browsers hold): it says who its holder is and nothing more.
// Every other CA request is refused and audited; it cannot make another
// token; it ends with the login session it came from.
func TestReaderTokenCannotMint(t *testing.T) {
	w := catest.New(t, catest.Options{})
	w.AddUser(t, "audrey", pw, []string{"auditors", "sre", "engineers", "incident-commanders"}, false)
	ctx := context.Background()
	login := w.Login(t, "audrey", pw, "")
	reader := w.ReaderToken(t, login)
	rc := w.Client(t, reader)

	info, err := rc.Session(ctx)
	if err != nil || info.User != "audrey" || info.Scope != api.ScopeReadRecordings {
		t.Fatalf("who am I with a reader token: %+v %v", info, err)
	}
	_, pub := keyPair(t, t.TempDir(), "k")
	refusals := []struct {
		name string
		call func() error
	}{
		{"certificate", func() error { _, err := rc.Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: pub}); return err }},
		{"access request", func() error {
			_, err := rc.CreateRequest(ctx, api.CreateRequest{Tier: "break-glass", Reason: "INC-1 reader"})
			return err
		}},
		{"list requests", func() error { _, err := rc.ListRequests(ctx, "", false); return err }},
		{"another token", func() error { _, err := rc.ReaderToken(ctx); return err }},
	}
	for _, r := range refusals {
		err := r.call()
		if !api.IsCode(err, api.CodeForbidden) || !strings.Contains(err.Error(), "only reads recordings") {
			t.Errorf("%s with a reader token: %v", r.name, err)
		}
	}
	evs, err := w.Store.Audit(ctx, storeFilter("session.scope"))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != len(refusals) {
		t.Errorf("%d scope refusals audited, want %d", len(evs), len(refusals))
	}
	for _, ev := range evs {
		if ev.Actor != "audrey" || ev.Outcome != "refused" || ev.Details["scope"] != api.ScopeReadRecordings {
			t.Errorf("scope refusal audit: %+v", ev)
		}
	}
	// The login session still mints; logging it out ends the reader token.
	if _, err := w.Client(t, login).Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: pub}); err != nil {
		t.Fatalf("the login session lost its rights: %v", err)
	}
	fresh := w.Client(t, w.ReaderToken(t, login))
	if err := w.Client(t, login).Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Session(ctx); !api.IsCode(err, api.CodeUnauthenticated) {
		t.Errorf("a reader token outlived its login session: %v", err)
	}
}
