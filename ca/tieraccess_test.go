package ca_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
)

// access asks GET /v1/session as c and returns its per-tier answer by tier.
func access(t *testing.T, c *client.Client) map[string]api.TierAccess {
	t.Helper()
	info, err := c.Session(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]api.TierAccess{}
	for _, a := range info.Access {
		out[a.Tier] = a
	}
	if len(out) != len(info.Tiers) {
		t.Fatalf("access %+v does not answer for every tier in %v", info.Access, info.Tiers)
	}
	return out
}

// wantAccess checks one tier: available or not, and a reason containing
// each of reasons.
func wantAccess(t *testing.T, who string, got map[string]api.TierAccess, tier string, available bool, reasons ...string) {
	t.Helper()
	a, ok := got[tier]
	if !ok {
		t.Fatalf("%s: no answer for tier %s: %+v", who, tier, got)
	}
	if a.Available != available {
		t.Fatalf("%s, tier %s: available %v, want %v (%+v)", who, tier, a.Available, available, a)
	}
	all := strings.Join(a.Reasons, "; ")
	for _, r := range reasons {
		if !strings.Contains(all, r) {
			t.Fatalf("%s, tier %s: reasons %q lack %q", who, tier, all, r)
		}
	}
	if available != (len(a.Reasons) == 0) {
		t.Fatalf("%s, tier %s: available %v with reasons %q", who, tier, available, all)
	}
}

// TestSessionTierAccessOnCall: the session endpoint says per tier what the
// on-call schedule and approvals leave, and agrees with issuance: what it
// calls available is issued, what it refuses is refused.
func TestSessionTierAccessOnCall(t *testing.T) {
	w := newOnCallWorld(t)

	alice := access(t, w.alice) // on call now
	wantAccess(t, "alice", alice, "production", true)
	wantAccess(t, "alice", alice, "oncall-prod", true)
	wantAccess(t, "alice", alice, "prod-ro", true)
	if !alice["oncall-prod"].OnCall || !alice["oncall-prod"].OnCallRequired || alice["prod-ro"].Approvals != 0 {
		t.Fatalf("alice: %+v", alice)
	}

	mallory := access(t, w.mallory) // sre, in no rotation
	wantAccess(t, "mallory", mallory, "production", true)
	wantAccess(t, "mallory", mallory, "oncall-prod", false, "not on call")
	wantAccess(t, "mallory", mallory, "prod-ro", false, "needs 1 approval: sshward request --tier prod-ro")
	if _, err := w.cert(t, w.mallory, api.CertRequest{Tier: "oncall-prod"}); err == nil {
		t.Fatal("status said not on call, yet oncall-prod was issued")
	}
	if _, err := w.cert(t, w.alice, api.CertRequest{Tier: "oncall-prod"}); err != nil {
		t.Fatalf("status said available, issuance refused: %v", err)
	}

	// The shift moves on: at base+3h bob is on call, alice is not.
	w.clk.Advance(w.base.Add(3*time.Hour + time.Minute).Sub(w.clk.Now()))
	wantAccess(t, "alice after her shift", access(t, w.alice), "oncall-prod", false, "not on call")
	wantAccess(t, "bob on shift", access(t, w.bob), "oncall-prod", true)

	// No tier for a group that maps to none (ivy approves, holds nothing).
	if got := access(t, w.ic); len(got) != 0 {
		t.Fatalf("ivy: %+v", got)
	}
}

// TestSessionTierAccessMFA: with the default policy a login without the
// second factor is told production needs MFA, and how to get it; the same
// user with the TOTP code gets production, and break-glass still names
// its approvals.
func TestSessionTierAccessMFA(t *testing.T) {
	clk := &clock{}
	c := catest.New(t, catest.Options{Now: clk.Now})
	secret := c.AddUser(t, "alice", pw, []string{"engineers", "sre", "oncall"}, true)

	// Without the code: the CA refuses password-only logins for a TOTP
	// user, so make a user without TOTP for the no-MFA session.
	c.AddUser(t, "bob", pw, []string{"engineers", "sre"}, false)
	bob := access(t, c.Client(t, c.Login(t, "bob", pw, "")))
	wantAccess(t, "bob", bob, "staging", true)
	wantAccess(t, "bob", bob, "production", false, "needs MFA: log in again with your TOTP code")
	if !bob["production"].MFARequired {
		t.Fatalf("bob: %+v", bob["production"])
	}
	if _, ok := bob["break-glass"]; ok {
		t.Fatalf("bob is not in oncall, yet break-glass is listed: %+v", bob)
	}

	alice := access(t, c.Client(t, c.Login(t, "alice", pw, catest.Code(t, secret, clk.Now()))))
	wantAccess(t, "alice", alice, "production", true)
	wantAccess(t, "alice", alice, "break-glass", false, "needs 2 approvals: sshward request --tier break-glass")
	if a := alice["break-glass"]; a.Approvals != 2 || strings.Contains(strings.Join(a.Reasons, ";"), "MFA") {
		t.Fatalf("alice break-glass: %+v", a)
	}
}
