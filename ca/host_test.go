package ca_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

func hostKey(t *testing.T) (ssh.Signer, string) {
	t.Helper()
	s := catest.NewSigner(t)
	return s, string(ssh.MarshalAuthorizedKey(s.PublicKey()))
}

func parseCert(t *testing.T, s string) *ssh.Certificate {
	t.Helper()
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return pk.(*ssh.Certificate)
}

func TestHostJoinRenewAndRevocations(t *testing.T) {
	ctx := context.Background()
	w := catest.New(t, catest.Options{})
	anon := w.Client(t, "")
	tok, err := w.Authority.NewJoinToken(ctx, ca.JoinTokenRequest{Names: []string{"db1.prod", "db1.production.example.com"}, Tier: "production"})
	if err != nil {
		t.Fatal(err)
	}
	signer, pub := hostKey(t)

	// Wrong tier on the agent side is refused and does not spend the token.
	if _, err := anon.Join(ctx, api.JoinRequest{Token: tok.Token, PublicKey: pub, Tier: "staging"}); !api.IsCode(err, api.CodeForbidden) {
		t.Fatalf("join with the wrong tier: %v", err)
	}
	resp, err := anon.Join(ctx, api.JoinRequest{Token: tok.Token, PublicKey: pub, Tier: "production"})
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCert(t, resp.Certificate)
	if cert.CertType != ssh.HostCert || strings.Join(cert.ValidPrincipals, ",") != "db1.prod,db1.production.example.com" {
		t.Fatalf("host cert: type %d principals %v", cert.CertType, cert.ValidPrincipals)
	}
	if len(resp.UserCA) != 2 {
		t.Fatalf("a production host must trust production + break-glass user CAs, got %d", len(resp.UserCA))
	}
	// The token is single use.
	if _, err := anon.Join(ctx, api.JoinRequest{Token: tok.Token, PublicKey: pub}); !api.IsCode(err, api.CodeTokenInvalid) {
		t.Fatalf("second join with one token: %v", err)
	}
	// ssh-keygen reads it as a host certificate for those names.
	dir := t.TempDir()
	certFile := filepath.Join(dir, "host-cert.pub")
	os.WriteFile(certFile, []byte(resp.Certificate), 0o644)
	out, err := exec.Command("ssh-keygen", "-L", "-f", certFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "host certificate") || !strings.Contains(string(out), "db1.prod") {
		t.Fatalf("ssh-keygen -L: %v %s", err, out)
	}

	// Renewal with the current host certificate, no token.
	renewed, err := anon.RenewHost(ctx, cert, signer, api.RenewRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rc := parseCert(t, renewed.Certificate); rc.Serial == cert.Serial || rc.ValidBefore < cert.ValidBefore {
		t.Fatalf("renewal: serial %d → %d, valid before %d → %d", cert.Serial, rc.Serial, cert.ValidBefore, rc.ValidBefore)
	}
	// Revocation list for the host's own tier, refused for another tier.
	list, err := anon.HostRevoked(ctx, "production", cert, signer)
	if err != nil || list.Tier != "production" {
		t.Fatalf("revocation list: %+v %v", list, err)
	}
	if _, err := anon.HostRevoked(ctx, "staging", cert, signer); !api.IsCode(err, api.CodeForbidden) {
		t.Fatalf("another tier's list: %v", err)
	}
	// A revoked user serial shows up in the list the agent polls.
	if _, err := w.Authority.Revoke(ctx, ca.RevokeRequest{Serial: 4242, Tier: "break-glass", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	list2, err := anon.HostRevoked(ctx, "production", cert, signer)
	if err != nil || len(list2.Serials) != 1 || list2.Serials[0] != 4242 || list2.Generation <= list.Generation {
		t.Fatalf("after revoking a break-glass serial, production list: %+v %v", list2, err)
	}
	// A revoked host certificate can no longer renew or fetch lists.
	if _, err := w.Authority.Revoke(ctx, ca.RevokeRequest{Serial: cert.Serial, Reason: "host stolen"}); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.RenewHost(ctx, cert, signer, api.RenewRequest{}); !api.IsCode(err, api.CodeForbidden) {
		t.Fatalf("renewal with a revoked host cert: %v", err)
	}
	// A user certificate is not a host identity.
	w.AddUser(t, "alice", pw, []string{"engineers"}, false)
	uc := w.Client(t, w.Login(t, "alice", pw, ""))
	userSigner, userPub := hostKey(t)
	ur, err := uc.Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: userPub})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.RenewHost(ctx, parseCert(t, ur.Certificate), userSigner, api.RenewRequest{}); !api.IsCode(err, api.CodeUnauthenticated) {
		t.Fatalf("renewal with a user cert: %v", err)
	}
	// Expired join tokens are refused.
	past := time.Now()
	w2 := catest.New(t, catest.Options{Now: func() time.Time { return past }})
	tok2, _ := w2.Authority.NewJoinToken(ctx, ca.JoinTokenRequest{Names: []string{"h"}, Tier: "staging", TTL: time.Minute})
	past = past.Add(2 * time.Minute)
	if _, err := w2.Client(t, "").Join(ctx, api.JoinRequest{Token: tok2.Token, PublicKey: pub}); !api.IsCode(err, api.CodeTokenInvalid) {
		t.Fatalf("expired join token: %v", err)
	}
}
