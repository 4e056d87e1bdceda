package playback_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
)

// joinHost joins a host through the CA, as sshward-agent does.
func joinHost(t *testing.T, w *world, name, tier string) *host {
	t.Helper()
	ctx := context.Background()
	tok, err := w.ca.Authority.NewJoinToken(ctx, ca.JoinTokenRequest{Names: []string{name}, Tier: tier, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	resp, err := w.ca.Client(t, "").Join(ctx, api.JoinRequest{Token: tok.Token, PublicKey: string(ssh.MarshalAuthorizedKey(signer.PublicKey()))})
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	return &host{name: name, cert: pub.(*ssh.Certificate), signer: signer}
}

// TestRevokedHostCannotUpload is the stolen host key: once the CA revokes
// the host's certificate, the playback server (told by push, no restart)
// refuses its uploads with 403, audits the attempt, and stores nothing.
func TestRevokedHostCannotUpload(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	h := joinHost(t, w, "web7.staging", "staging")
	waitFor(t, "the revoked-hosts stream to sync", 10*time.Second, srv.revoked.Synced)

	a := w.startAgent(t, h, srv.url, agentOpts{})
	before := a.create(t, "s-before", "staging", false)
	writeOutput(t, a, before, 0, 3)
	closeRec(t, before)
	w.shipped(t, a, srv.url, "s-before")

	st := time.Now()
	if _, err := w.ca.Authority.Revoke(context.Background(), ca.RevokeRequest{Serial: h.cert.Serial, Reason: "host key stolen"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revocation to reach playback", 10*time.Second, func() bool { return srv.revoked.Revoked(h.cert) })
	t.Logf("host revocation reached playback in %s", time.Since(st).Round(time.Millisecond))

	after := a.create(t, "s-after", "staging", false)
	writeOutput(t, a, after, 0, 3)
	closeRec(t, after)
	waitFor(t, "a refused upload", 10*time.Second, func() bool {
		st, _ := statusOf(a, "s-after")
		return st.Attempts > 0 && strings.Contains(st.LastError, "revoked")
	})
	if code, _ := w.get(t, srv.url+"/api/sessions/s-after", w.auditor); code != http.StatusNotFound {
		t.Errorf("an upload from a revoked host was stored: GET %d", code)
	}
	code, body := w.get(t, srv.url+"/api/audit", w.auditor)
	var audit struct {
		Events []struct{ Type, Actor, Reason string } `json:"events"`
	}
	json.Unmarshal(body, &audit)
	found := false
	for _, ev := range audit.Events {
		if ev.Type == "host.refused" && strings.Contains(ev.Reason, "revoked") && ev.Actor == "host:web7.staging" {
			found = true
		}
	}
	if code != http.StatusOK || !found {
		t.Errorf("no host.refused audit record: %d %s", code, body)
	}
}
