package ca_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

// TestHostCARotation: the host CA rotates while the CA serves. During the
// overlap the trust endpoint lists both keys (signing key first), a host
// whose certificate the old key signed still renews, and its new
// certificate is signed by the new key. An overlap shorter than the host
// certificate lifetime, a second rotation and an early retirement without
// force are refused. After retirement only the new key is trusted and a
// certificate of the old key no longer authenticates a renewal (an
// attacker holding a stolen old-key host certificate gets nothing). The
// revocation stream's host trust names both keys, then the new one.
func TestHostCARotation(t *testing.T) {
	ctx := context.Background()
	rot := &catest.MemRotator{}
	w := catest.New(t, catest.Options{Keys: rot})
	anon := w.Client(t, "")
	tok, err := w.Authority.NewJoinToken(ctx, ca.JoinTokenRequest{Names: []string{"web1.staging"}, Tier: "staging"})
	if err != nil {
		t.Fatal(err)
	}
	signer, pub := hostKey(t)
	joined, err := anon.Join(ctx, api.JoinRequest{Token: tok.Token, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	oldCert := parseCert(t, joined.Certificate)
	oldKey := w.HostCA.PublicKey()
	if !sameKey(oldCert.SignatureKey, oldKey) {
		t.Fatal("the joined host certificate is not signed by the host CA")
	}

	if _, err := w.Authority.RotateHostCA(ctx, time.Minute, "test"); !errors.Is(err, ca.ErrOverlapTooShort) {
		t.Fatalf("rotation with an overlap shorter than the host certificate lifetime: %v", err)
	}
	res, err := w.Authority.RotateHostCA(ctx, 48*time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	if !res.HostCA || res.Tier != "" || res.Previous != ssh.FingerprintSHA256(oldKey) || res.Current == res.Previous || len(res.Keys) != 2 {
		t.Fatalf("rotation result %+v", res)
	}
	tr, err := anon.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newLine := tr.HostCA
	if len(tr.HostCAKeys) != 2 || tr.HostCAKeys[0] != newLine || !sameLine(t, tr.HostCAKeys[1], oldKey) || sameLine(t, newLine, oldKey) {
		t.Fatalf("trust during the overlap: host_ca %q host_ca_keys %q", tr.HostCA, tr.HostCAKeys)
	}
	// Agents get both keys on their stream, the old one with its retirement.
	if ht := w.Authority.HostTrust("staging").HostCA; len(ht) != 2 || ht[0].Key != newLine || !ht[0].NotAfter.IsZero() ||
		!sameLine(t, ht[1].Key, oldKey) || !ht[1].NotAfter.Equal(res.RetireAt) {
		t.Fatalf("host trust during the overlap: %+v (retire at %s)", ht, res.RetireAt)
	}
	if _, err := w.Authority.RotateHostCA(ctx, 48*time.Hour, "test"); !errors.Is(err, ca.ErrRotationPending) {
		t.Fatalf("second rotation during the overlap: %v", err)
	}

	// Renewal with the old-key certificate: accepted, re-signed by the new key.
	renewed, err := anon.RenewHost(ctx, oldCert, signer, api.RenewRequest{})
	if err != nil {
		t.Fatalf("renewal with an old-key certificate during the overlap: %v", err)
	}
	newCert := parseCert(t, renewed.Certificate)
	if sameKey(newCert.SignatureKey, oldKey) || !sameLine(t, newLine, newCert.SignatureKey) {
		t.Fatalf("the renewed host certificate is signed by %s, want the new key %s", ssh.FingerprintSHA256(newCert.SignatureKey), res.Current)
	}

	if _, err := w.Authority.RetireHostCA(ctx, false, "test"); !errors.Is(err, ca.ErrOverlapRunning) {
		t.Fatalf("retirement before the overlap ends: %v", err)
	}
	if _, err := w.Authority.RetireHostCA(ctx, true, "test"); err != nil {
		t.Fatal(err)
	}
	if rot.Retired() != 1 {
		t.Fatalf("the rotator retired %d keys", rot.Retired())
	}
	if tr, err = anon.Trust(ctx); err != nil {
		t.Fatal(err)
	}
	if len(tr.HostCAKeys) != 1 || tr.HostCAKeys[0] != newLine {
		t.Fatalf("trust after retirement: %q", tr.HostCAKeys)
	}
	if ht := w.Authority.HostTrust("staging").HostCA; len(ht) != 1 || ht[0].Key != newLine {
		t.Fatalf("host trust after retirement: %+v", ht)
	}
	if _, err := anon.RenewHost(ctx, oldCert, signer, api.RenewRequest{}); err == nil {
		t.Fatal("a certificate of the retired host-CA key renewed")
	}
	if _, err := anon.RenewHost(ctx, newCert, signer, api.RenewRequest{}); err != nil {
		t.Fatalf("renewal with the new-key certificate: %v", err)
	}
	if _, err := w.Authority.RetireHostCA(ctx, true, "test"); !errors.Is(err, ca.ErrNoPreviousKey) {
		t.Fatalf("second retirement: %v", err)
	}
}

func sameKey(a, b ssh.PublicKey) bool { return bytes.Equal(a.Marshal(), b.Marshal()) }

// sameLine reports whether the authorized_keys line holds key.
func sameLine(t *testing.T, line string, key ssh.PublicKey) bool {
	t.Helper()
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return sameKey(pk, key)
}
