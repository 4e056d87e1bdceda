package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/tlsca"
)

// joinTestHost joins a host of tier and returns its certificate and key.
func joinTestHost(t *testing.T, w *catest.CA, name, tier string) (*ssh.Certificate, ssh.Signer) {
	t.Helper()
	ctx := context.Background()
	tok, err := w.Authority.NewJoinToken(ctx, ca.JoinTokenRequest{Names: []string{name}, Tier: tier})
	if err != nil {
		t.Fatal(err)
	}
	signer, pub := hostKey(t)
	resp, err := w.Client(t, "").Join(ctx, api.JoinRequest{Token: tok.Token, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	return parseCert(t, resp.Certificate), signer
}

// TestRevokedHostRefusedByHostRoutes: a host whose certificate is revoked
// (by serial or by key id) is refused by every host route of the CA with
// 403 and an audit record, even though its certificate and signature
// still verify; another host of the tier is not affected.
func TestRevokedHostRefusedByHostRoutes(t *testing.T) {
	ctx := context.Background()
	w := catest.New(t, catest.Options{})
	anon := w.Client(t, "")
	tests := []struct {
		name   string
		revoke func(c *ssh.Certificate) ca.RevokeRequest
	}{
		{"by serial", func(c *ssh.Certificate) ca.RevokeRequest {
			return ca.RevokeRequest{Serial: c.Serial, Reason: "host stolen"}
		}},
		{"by key id", func(c *ssh.Certificate) ca.RevokeRequest {
			return ca.RevokeRequest{KeyID: c.KeyId, Reason: "host stolen"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, signer := joinTestHost(t, w, "db-"+strings.ReplaceAll(tt.name, " ", "-")+".prod", "production")
			other, otherSigner := joinTestHost(t, w, "ok-"+strings.ReplaceAll(tt.name, " ", "-")+".prod", "production")
			res, err := w.Authority.Revoke(ctx, tt.revoke(cert))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(res.Tiers, ca.HostRevocationTier) {
				t.Fatalf("a host certificate revoked into tiers %v, want %s", res.Tiers, ca.HostRevocationTier)
			}
			calls := map[string]func() error{
				"renew": func() error { _, err := anon.RenewHost(ctx, cert, signer, api.RenewRequest{}); return err },
				"list":  func() error { _, err := anon.HostRevoked(ctx, "production", cert, signer); return err },
				"watch": func() error {
					return anon.WatchRevocations(ctx, client.WatchRequest{Tier: "production", Cert: cert, Signer: signer},
						func(api.RevocationEvent) error { return errors.New("revoked host got an event") })
				},
			}
			for name, call := range calls {
				err := call()
				var ae *api.Error
				if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || !strings.Contains(ae.Message, "certificate was revoked") {
					t.Errorf("%s by a revoked host: %v", name, err)
				}
			}
			evs, err := w.Store.Audit(ctx, store.AuditFilter{Type: "host.refused"})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, e := range evs {
				if e.Serial == cert.Serial && e.Outcome == "refused" && e.Reason == "host certificate revoked" && e.KeyID == cert.KeyId {
					n++
				}
			}
			if n != len(calls) {
				t.Errorf("%d host.refused audit records for the revoked host, want %d: %+v", n, len(calls), evs)
			}
			if _, err := anon.RenewHost(ctx, other, otherSigner, api.RenewRequest{}); err != nil {
				t.Errorf("another host of the tier was refused: %v", err)
			}
		})
	}
}

// watcher collects a revocation stream's events on a channel.
type watcher struct {
	events chan api.RevocationEvent
	done   chan error
	cancel context.CancelFunc
}

func watch(t *testing.T, cl *client.Client, req client.WatchRequest) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{events: make(chan api.RevocationEvent, 64), done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- cl.WatchRevocations(ctx, req, func(ev api.RevocationEvent) error {
			w.events <- ev
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// next returns the next event that is not a heartbeat (or, with
// heartbeats, the next of any type).
func (w *watcher) next(t *testing.T, heartbeats bool) api.RevocationEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-w.events:
			if ev.Type == api.EventHeartbeat && !heartbeats {
				continue
			}
			return ev
		case err := <-w.done:
			t.Fatalf("stream ended: %v", err)
		case <-timeout:
			t.Fatal("no revocation event within 10s")
		}
	}
}

// TestRevocationStream: the stream a host watches starts with the whole
// list, then brings each revocation of the tiers the host trusts as it
// commits (not another tier's), beats while idle, and resumes after a
// disconnect from the last position seen without losing what was revoked
// in between; a position ahead of the CA's log gets the whole list again.
func TestRevocationStream(t *testing.T) {
	ctx := context.Background()
	w := catest.New(t, catest.Options{RevocationHeartbeat: 200 * time.Millisecond})
	anon := w.Client(t, "")
	cert, signer := joinTestHost(t, w, "db1.prod", "production")
	revoke := func(serial uint64, tier string) {
		t.Helper()
		if _, err := w.Authority.Revoke(ctx, ca.RevokeRequest{Serial: serial, Tier: tier, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	revoke(11, "production")
	req := client.WatchRequest{Tier: "production", Cert: cert, Signer: signer}
	s := watch(t, anon, req)
	if ev := s.next(t, false); ev.Type != api.EventHello || ev.Heartbeat != api.Duration(200*time.Millisecond) {
		t.Fatalf("first event %+v, want hello with the heartbeat", ev)
	}
	snap := s.next(t, false)
	if snap.Type != api.EventSnapshot || !slices.Equal(snap.List.Serials, []uint64{11}) || snap.List.MaxStale["production"] != api.Duration(5*time.Minute) {
		t.Fatalf("snapshot %+v", snap)
	}
	revoke(12, "production")
	revoke(13, "staging")     // not trusted on production hosts
	revoke(14, "break-glass") // trusted on production hosts
	var got []uint64
	last := snap.Seq
	for len(got) < 2 {
		ev := s.next(t, false)
		if ev.Type != api.EventRevoke || ev.Seq <= last {
			t.Fatalf("event %+v after seq %d", ev, last)
		}
		got, last = append(got, ev.Serial), ev.Seq
	}
	if !slices.Equal(got, []uint64{12, 14}) {
		t.Fatalf("streamed serials %v, want [12 14] (13 is staging)", got)
	}
	if hb := s.next(t, true); hb.Type != api.EventHeartbeat || hb.Seq < last {
		t.Fatalf("idle stream sent %+v, want a heartbeat at ≥ %d", hb, last)
	}

	// Disconnected: what is revoked meanwhile arrives on resume, and
	// nothing seen before is sent again.
	s.cancel()
	<-s.done
	s.done <- nil // for the cleanup
	revoke(15, "production")
	revoke(16, "staging")
	req.Since = last
	r := watch(t, anon, req)
	r.next(t, false) // hello
	if ev := r.next(t, false); ev.Type != api.EventRevoke || ev.Serial != 15 {
		t.Fatalf("resumed stream: first event %+v, want the revocation of 15", ev)
	}

	// A position ahead of the log (a CA restored from an older backup):
	// the whole list again.
	req.Since = last + 1000
	f := watch(t, anon, req)
	f.next(t, false)
	if ev := f.next(t, false); ev.Type != api.EventSnapshot || !slices.Equal(ev.List.Serials, []uint64{11, 12, 14, 15}) {
		t.Fatalf("stream from ahead of the log: %+v", ev)
	}

	// Another tier's stream is not this host's.
	err := anon.WatchRevocations(ctx, client.WatchRequest{Tier: "staging", Cert: cert, Signer: signer}, func(api.RevocationEvent) error { return nil })
	if !api.IsCode(err, api.CodeForbidden) {
		t.Fatalf("production host watching staging: %v", err)
	}
}

// TestRevocationStreamAuth: no anonymous watcher, and a TLS client
// certificate is accepted only from the CA's own root (a playback server
// joined to this CA), and only for the revoked-hosts scope.
func TestRevocationStreamAuth(t *testing.T) {
	ctx := context.Background()
	w := catest.New(t, catest.Options{})
	noop := func(api.RevocationEvent) error { return nil }
	if err := w.Client(t, "").WatchRevocations(ctx, client.WatchRequest{Tier: api.HostsScope}, noop); !api.IsCode(err, api.CodeUnauthenticated) {
		t.Fatalf("anonymous watcher: %v", err)
	}
	// A certificate from another root, for the same names.
	other, err := tlsca.CreateRoot(ctx, t.TempDir(), []byte("other-root-passphrase"), "attacker root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := other.IssueServer([]string{"127.0.0.1"}, &key.PublicKey, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsca.ClientConfigFromPEM(w.RootPEM)
	if err != nil {
		t.Fatal(err)
	}
	tc.Certificates = []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}
	cl, err := client.New(client.Config{URL: w.URL, HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.WatchRevocations(ctx, client.WatchRequest{Tier: api.HostsScope}, noop); !api.IsCode(err, api.CodeUnauthenticated) {
		t.Fatalf("client certificate from another root: %v", err)
	}
}
