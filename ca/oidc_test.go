package ca_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/identity"
	"github.com/sshward/sshward/ca/identity/glewlwydtest"
	"github.com/sshward/sshward/ca/identity/oidcflow"
)

// TestOIDCLoginAgainstGlewlwyd drives the CA's OIDC path with a real
// provider process on loopback: auth code + PKCE gives an ID token, the CA
// verifies it, takes groups from the claim and MFA from amr, and policy
// follows: production needs the OTP-backed login.
func TestOIDCLoginAgainstGlewlwyd(t *testing.T) {
	p := glewlwydtest.Start(t, glewlwydtest.Options{})
	p.AddUser(t, "oscar", "oscar-pw-123", []string{"sre", "engineers"}, true)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	v, err := identity.NewOIDCVerifier(ctx, identity.OIDCConfig{Issuer: p.Issuer, ClientID: p.ClientID})
	if err != nil {
		t.Fatal(err)
	}
	w := catest.New(t, catest.Options{OIDC: v, OIDCClient: api.OIDCConfig{Issuer: p.Issuer, ClientID: p.ClientID, Scopes: glewlwydtest.Scopes}})
	anon := w.Client(t, "")
	cfg, err := anon.OIDCConfig(ctx)
	if err != nil || !cfg.Enabled || cfg.Issuer != p.Issuer {
		t.Fatalf("GET /v1/login/oidc: %+v %v", cfg, err)
	}
	var lastToken string
	login := func(t *testing.T, scopes []string, otp string) *api.LoginResponse {
		t.Helper()
		fc := oidcflow.Config{Issuer: cfg.Issuer, ClientID: cfg.ClientID, Scopes: scopes}
		fc.OpenBrowser = func(u string) error {
			p.CompleteAuthCode(t, u, "oscar", "oscar-pw-123", otp)
			return nil
		}
		raw, err := oidcflow.AuthCode(ctx, fc)
		if err != nil {
			t.Fatalf("auth code flow: %v", err)
		}
		resp, err := anon.LoginOIDC(ctx, raw)
		if err != nil {
			t.Fatalf("CA login: %v", err)
		}
		lastToken = raw
		return resp
	}
	_, pub := keyPair(t, t.TempDir(), "k")

	// Password only at the IdP: a session without MFA; staging works, production refuses.
	plain := login(t, []string{"openid", "profile", "email", glewlwydtest.GroupsScope}, "")
	if plain.User != "oscar" || plain.MFA || !strings.Contains(strings.Join(plain.Groups, ","), "sre") {
		t.Fatalf("password-only OIDC login: %+v", plain)
	}
	c := w.Client(t, plain.Token)
	if _, err := c.Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: pub}); err != nil {
		t.Fatalf("staging via OIDC: %v", err)
	}
	if _, err := c.Cert(ctx, api.CertRequest{Tier: "production", PublicKey: pub}); !api.IsCode(err, api.CodeMFARequired) {
		t.Fatalf("production without MFA at the IdP: %v", err)
	}
	// OTP at the IdP (amr has otp): production is allowed.
	mfa := login(t, glewlwydtest.Scopes, p.NextOTP(t, "oscar"))
	if !mfa.MFA {
		t.Fatalf("OTP-backed OIDC login has no MFA: %+v", mfa)
	}
	cert, err := w.Client(t, mfa.Token).Cert(ctx, api.CertRequest{Tier: "production", PublicKey: pub})
	if err != nil || !strings.HasPrefix(cert.KeyID, "oscar@oidc tier=production") {
		t.Fatalf("production via MFA OIDC: %+v %v", cert, err)
	}
	// The same ID token, POSTed again (captured from a proxy log, say), opens
	// no second session, and the attempt is audited.
	if _, err := anon.LoginOIDC(ctx, lastToken); !api.IsCode(err, api.CodeUnauthenticated) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replayed ID token: %v", err)
	}
	evs, err := w.Store.Audit(ctx, storeFilter("login"))
	if err != nil {
		t.Fatal(err)
	}
	if last := evs[len(evs)-1]; last.Outcome != "refused" || last.Actor != "oscar" || !strings.Contains(last.Reason, "already used") {
		t.Fatalf("replay not audited: %+v", last)
	}
	// A forged token is refused and audited.
	if _, err := anon.LoginOIDC(ctx, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."); !api.IsCode(err, api.CodeUnauthenticated) {
		t.Fatalf("forged ID token: %v", err)
	}
}
