package ca_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

// TestHostCertCarriesUserCALimits: join and renewal answers tell the host,
// per user-CA key it trusts, the tier's max_ttl (issue 8 §4), matching the
// keys in UserCA and the policy.
func TestHostCertCarriesUserCALimits(t *testing.T) {
	ctx := context.Background()
	w := catest.New(t, catest.Options{})
	anon := w.Client(t, "")
	tok, err := w.Authority.NewJoinToken(ctx, ca.JoinTokenRequest{Names: []string{"db1.prod"}, Tier: "production"})
	if err != nil {
		t.Fatal(err)
	}
	signer, pub := hostKey(t)
	resp, err := anon.Join(ctx, api.JoinRequest{Token: tok.Token, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := anon.RenewHost(ctx, parseCert(t, resp.Certificate), signer, api.RenewRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{"production": 30 * time.Minute, "break-glass": 10 * time.Minute}
	for name, r := range map[string]*api.HostCertResponse{"join": resp, "renew": renewed} {
		if len(r.UserCALimits) != len(want) {
			t.Fatalf("%s: limits %+v, want one per trusted tier %v", name, r.UserCALimits, want)
		}
		for _, l := range r.UserCALimits {
			if time.Duration(l.MaxTTL) != want[l.Tier] {
				t.Errorf("%s: tier %s max_ttl %v, want %v", name, l.Tier, time.Duration(l.MaxTTL), want[l.Tier])
			}
			key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(w.UserCAs[l.Tier].PublicKey())))
			if strings.TrimSpace(l.UserCA) != key {
				t.Errorf("%s: tier %s key %q is not the tier's user CA %q", name, l.Tier, l.UserCA, key)
			}
			found := false
			for _, k := range r.UserCA {
				found = found || strings.TrimSpace(k) == strings.TrimSpace(l.UserCA)
			}
			if !found {
				t.Errorf("%s: limit for a key not in user_ca: %s", name, l.UserCA)
			}
		}
	}
}
