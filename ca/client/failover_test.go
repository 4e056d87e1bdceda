package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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
