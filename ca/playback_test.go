package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/store"
)

func pkixPEM(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestJoinPlayback(t *testing.T) {
	c := catest.New(t, catest.Options{})
	ctx := context.Background()
	token := func(kind string, names ...string) string {
		t.Helper()
		res, err := c.Authority.NewJoinToken(ctx, ca.JoinTokenRequest{Kind: kind, Names: names, Tier: "staging"})
		if err != nil {
			t.Fatal(err)
		}
		return res.Token
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	good := pkixPEM(t, &ecKey.PublicKey)
	cl := c.Client(t, "")

	used := token("playback", "127.0.0.1")
	if _, err := cl.JoinPlayback(ctx, api.PlaybackJoinRequest{Token: used, PublicKeyPEM: good, URL: "https://127.0.0.1:1"}); err != nil {
		t.Fatalf("first join: %v", err)
	}

	refusals := []struct {
		name   string
		req    api.PlaybackJoinRequest
		status int
		code   string
	}{
		{"unknown token", api.PlaybackJoinRequest{Token: "swj_nope", PublicKeyPEM: good, URL: "https://127.0.0.1:1"}, http.StatusUnauthorized, api.CodeTokenInvalid},
		{"token already used", api.PlaybackJoinRequest{Token: used, PublicKeyPEM: good, URL: "https://127.0.0.1:1"}, http.StatusUnauthorized, api.CodeTokenInvalid},
		{"host token", api.PlaybackJoinRequest{Token: token("host", "web1"), PublicKeyPEM: good, URL: "https://web1:1"}, http.StatusForbidden, api.CodeTokenInvalid},
		{"name not in token", api.PlaybackJoinRequest{Token: token("playback", "playback.example.com"), PublicKeyPEM: good, URL: "https://ca.example.com:1"}, http.StatusForbidden, api.CodeForbidden},
		{"extra name not in token", api.PlaybackJoinRequest{Token: token("playback", "pb"), PublicKeyPEM: good, URL: "https://pb:1", Names: []string{"pb", "localhost"}}, http.StatusForbidden, api.CodeForbidden},
		{"url host not among names", api.PlaybackJoinRequest{Token: token("playback", "pb", "pb2"), PublicKeyPEM: good, URL: "https://pb2:1", Names: []string{"pb"}}, http.StatusBadRequest, api.CodeBadRequest},
		{"http url", api.PlaybackJoinRequest{Token: token("playback", "pb"), PublicKeyPEM: good, URL: "http://pb:1"}, http.StatusBadRequest, api.CodeBadRequest},
		{"rsa key", api.PlaybackJoinRequest{Token: token("playback", "pb"), PublicKeyPEM: pkixPEM(t, &rsaKey.PublicKey), URL: "https://pb:1"}, http.StatusBadRequest, api.CodeKeyType},
		{"p384 key", api.PlaybackJoinRequest{Token: token("playback", "pb"), PublicKeyPEM: pkixPEM(t, &p384.PublicKey), URL: "https://pb:1"}, http.StatusBadRequest, api.CodeKeyType},
		{"not pem", api.PlaybackJoinRequest{Token: token("playback", "pb"), PublicKeyPEM: "ssh-ed25519 AAAA", URL: "https://pb:1"}, http.StatusBadRequest, api.CodeBadRequest},
		{"no token", api.PlaybackJoinRequest{PublicKeyPEM: good, URL: "https://pb:1"}, http.StatusBadRequest, api.CodeBadRequest},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cl.JoinPlayback(ctx, tc.req)
			var ae *api.Error
			if !asAPIError(err, &ae) || ae.Status != tc.status || ae.Code != tc.code {
				t.Fatalf("got %v (%+v), want %d %s", err, ae, tc.status, tc.code)
			}
		})
	}

	t.Run("issues a certificate and registers the url", func(t *testing.T) {
		resp, err := cl.JoinPlayback(ctx, api.PlaybackJoinRequest{
			Token: token("playback", "playback.example.com", "127.0.0.1"), PublicKeyPEM: good,
			URL: "https://playback.example.com:8444/", Names: []string{"playback.example.com", "127.0.0.1"},
		})
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(resp.CertificatePEM))
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := pem.Decode([]byte(resp.RootPEM))
		root, err := x509.ParseCertificate(rb.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.RootPEM) != string(c.RootPEM) {
			t.Error("root_pem is not the CA's pinned root")
		}
		pool := x509.NewCertPool()
		pool.AddCert(root)
		for _, name := range []string{"playback.example.com", "127.0.0.1"} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("leaf does not verify for %s: %v", name, err)
			}
		}
		if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&ecKey.PublicKey) {
			t.Error("leaf is not for the key sent")
		}
		if !leaf.NotAfter.Equal(resp.ValidBefore) {
			t.Errorf("valid_before %v, leaf NotAfter %v", resp.ValidBefore, leaf.NotAfter)
		}
		if len(resp.HostCA) != 1 || resp.HostCA[0] != strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c.HostCA.PublicKey()))) {
			t.Errorf("host_ca = %q", resp.HostCA)
		}
		if got := c.Authority.PlaybackURL(ctx); got != "https://playback.example.com:8444" {
			t.Errorf("PlaybackURL = %q", got)
		}
		tr, err := cl.Trust(ctx)
		if err != nil || tr.Playback != "https://playback.example.com:8444" {
			t.Errorf("trust playback = %q, %v", tr.Playback, err)
		}
		evs, err := c.Store.Audit(ctx, store.AuditFilter{Type: "playback.join"})
		if err != nil {
			t.Fatal(err)
		}
		outcomes := []string{}
		for _, e := range evs {
			outcomes = append(outcomes, e.Outcome)
		}
		if !slices.Contains(outcomes, "ok") || !slices.Contains(outcomes, "refused") {
			t.Errorf("audit outcomes %v, want ok and refused events", outcomes)
		}
		last := evs[len(evs)-1]
		if last.Outcome != "ok" || last.Details["url"] != "https://playback.example.com:8444" || last.Subject != "playback.example.com" {
			t.Errorf("last audit event %+v", last)
		}
	})
}
