package client

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/tlsca"
)

// TestFailoverRetriesOnlyWhatIsSafe: a replica that takes a request and
// dies before answering (the connection is cut after the whole request was
// read) must not make the client replay an issuance on the next replica;
// a GET is replayed; a refused connection (nothing sent) is replayed for
// both; the client then sticks to the replica that answered.
func TestFailoverRetriesOnlyWhatIsSafe(t *testing.T) {
	var seenA, seenB atomic.Int32
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenA.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // read the request, never answer
		}
	}))
	defer dying.Close()
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenB.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	}))
	defer good.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // refused: nothing can be sent

	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	c, err := New(Config{URL: dying.URL + "," + good.URL, HTTPClient: &http.Client{}, Token: "t", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// POST issuance: reached replica A, no answer: not replayed on B.
	err = c.Do(ctx, http.MethodPost, "/v1/cert", struct{}{}, nil)
	if err == nil || !strings.Contains(err.Error(), "not sent again") {
		t.Fatalf("POST after a lost answer: err %v, want the not-sent-again refusal", err)
	}
	if seenB.Load() != 0 {
		t.Fatalf("the POST was replayed on another replica (%d times)", seenB.Load())
	}
	// GET: replayed on B, and B becomes the sticky replica.
	if err := c.Health(ctx); err != nil {
		t.Fatalf("GET with one replica dying: %v", err)
	}
	a := seenA.Load()
	if err := c.Health(ctx); err != nil || seenA.Load() != a {
		t.Fatalf("second GET went back to the failed replica (err %v)", err)
	}

	// A refused replica first: nothing was sent, so even a POST moves on.
	seenB.Store(0)
	c2, err := New(Config{URL: deadURL + "," + good.URL, HTTPClient: &http.Client{}, Token: "t", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Do(ctx, http.MethodPost, "/v1/cert", struct{}{}, nil); err != nil || seenB.Load() != 1 {
		t.Fatalf("POST with the first replica refusing connections: err %v, reached B %d times", err, seenB.Load())
	}
	// All down: one error naming each replica.
	c3, _ := New(Config{URL: deadURL + "," + deadURL + "/", HTTPClient: &http.Client{}, Now: clock})
	err = c3.Health(ctx)
	if err == nil || !strings.Contains(err.Error(), "no CA replica answered") {
		t.Fatalf("all replicas down: %v", err)
	}
}

// TestLearnedReplicaGetsNoTrustOfItsOwn: a URL learned from a trust bundle
// (LearnReplicas) is verified against the same pinned root as the
// configured ones. A server with another root in the learned list (an
// attacker who got a URL into the list, or a typo) is refused like a dead
// replica, never sent the session token's request; a real replica learned
// the same way takes over when the configured one is gone.
func TestLearnedReplicaGetsNoTrustOfItsOwn(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	mkRoot := func(name string) *tlsca.Root {
		r, err := tlsca.CreateRoot(ctx, t.TempDir(), []byte("root-passphrase-123"), name, now)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	serve := func(root *tlsca.Root, seen *atomic.Int32) *httptest.Server {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{}`))
		}))
		tc, err := root.ServerTLSConfig([]string{"127.0.0.1"}, time.Hour, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		// Not StartTLS: it adds httptest's own certificate, which a
		// client without SNI (an IP address) would be shown instead.
		srv.Listener = tls.NewListener(srv.Listener, tc)
		srv.Start()
		srv.URL = "https://" + srv.Listener.Addr().String()
		t.Cleanup(srv.Close)
		return srv
	}
	real, evil := mkRoot("sshward test CA"), mkRoot("someone else")
	var seenFirst, seenEvil, seenReplica atomic.Int32
	first := serve(real, &seenFirst)
	evilSrv := serve(evil, &seenEvil)
	replica := serve(real, &seenReplica)

	c, err := New(Config{URL: first.URL, RootPEM: tlsca.EncodePEM(real.Cert()), Token: "session-token"})
	if err != nil {
		t.Fatal(err)
	}
	added := c.LearnReplicas([]string{evilSrv.URL, first.URL, replica.URL, "http://127.0.0.1:1", "not a url"})
	if len(added) != 2 || added[0] != evilSrv.URL || added[1] != replica.URL {
		t.Fatalf("learned %v, want the two https URLs not yet known", added)
	}
	if again := c.LearnReplicas([]string{replica.URL}); len(again) != 0 {
		t.Fatalf("learned %v again", again)
	}
	first.Close() // the configured replica is gone
	if err := c.Do(ctx, http.MethodPost, "/v1/cert", struct{}{}, nil); err != nil {
		t.Fatalf("POST with the configured replica gone: %v", err)
	}
	if seenEvil.Load() != 0 {
		t.Fatalf("the server with another root received %d requests", seenEvil.Load())
	}
	if seenReplica.Load() != 1 {
		t.Fatalf("the learned replica received %d requests, want 1", seenReplica.Load())
	}
}
