package playback_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/objstore/s3test"
)

// TestLiveSessionOnEveryReplica: two playback replicas on one real
// S3-compatible server (versitygw); the agent ships a live recording to A
// only. What each step tries to break:
//
//   - listing: B lists the live recording (it learns it from A's
//     announcement in the bucket and the upload's start object);
//   - following: a reader following through B receives a line written after
//     the follow began, and the whole recording, ending when it finishes;
//     the view is audited on A (the holder) under the reader's own name;
//   - authorisation: an engineer (no auditor rights) is refused on B before
//     anything is forwarded;
//   - a forged announcement in the bucket naming a server that is not a
//     playback replica of the CA is not followed: a clear error, and that
//     server receives no request;
//   - a server the CA lists as a replica but whose TLS certificate is not
//     from the CA's root is refused at the handshake: no request reaches it.
func TestLiveSessionOnEveryReplica(t *testing.T) {
	s3 := s3test.Start(t)
	bucket := openBucket(t, s3)
	w := newWorld(t)
	a := w.startServer(t, serverOpts{objects: bucket, replicaSync: 200 * time.Millisecond})
	b := w.startServer(t, serverOpts{objects: bucket, replicaSync: 200 * time.Millisecond})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	ag := w.startAgent(t, h, a.url, agentOpts{})
	rec := ag.create(t, "s-live-ha", "staging", false)
	writeOutput(t, ag, rec, 0, 5)
	waitFor(t, "B to list the live recording A receives", 20*time.Second, func() bool {
		var ans struct{ Sessions []playback.SessionSummary }
		w.getJSON(t, b.url+"/api/sessions?live=1", w.auditor, &ans)
		return len(ans.Sessions) == 1 && ans.Sessions[0].ID == "s-live-ha" && ans.Sessions[0].Live && ans.Sessions[0].User == "bob"
	})

	// An engineer is refused on B (and nothing is forwarded for them).
	if status, body := w.get(t, b.url+"/api/sessions/s-live-ha/cast?follow=1", w.engineer); status != http.StatusForbidden {
		t.Fatalf("an engineer following through B: %d %s", status, body)
	}

	// Follow through B.
	req, _ := http.NewRequest(http.MethodGet, b.url+"/api/sessions/s-live-ha/cast?follow=1", nil)
	req.Header.Set("Authorization", "Bearer "+w.auditor)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := w.httpClient(t).Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(playback.HeaderIntegrity) != playback.IntegrityPending {
		t.Fatalf("follow through B: %d %v", resp.StatusCode, resp.Header)
	}
	var got bytes.Buffer
	arrived, ended := make(chan struct{}), make(chan error, 1)
	go func() {
		buf, once := make([]byte, 4096), false
		for {
			n, err := resp.Body.Read(buf)
			got.Write(buf[:n])
			if !once && strings.Contains(got.String(), "output line 000007") {
				once = true
				close(arrived)
			}
			if err != nil {
				ended <- err
				return
			}
		}
	}()
	writeOutput(t, ag, rec, 5, 5) // written after the follow began
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("a line written after the follow through B began did not arrive")
	}
	closeRec(t, rec)
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Fatalf("the follow through B ended with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the follow through B did not end when the recording finished")
	}
	if spool := w.shipped(t, ag, a.url, "s-live-ha"); !bytes.Equal(got.Bytes(), spool) {
		t.Fatalf("followed %d bytes through B, the recording has %d", got.Len(), len(spool))
	}
	var audit struct {
		Events []struct {
			Actor   string
			Details map[string]string
		}
	}
	w.getJSON(t, a.url+"/api/audit?type=view&subject=s-live-ha", w.auditor, &audit)
	follows := 0
	for _, e := range audit.Events {
		if e.Details["follow"] == "true" && e.Details["live"] == "true" {
			follows++
			if e.Actor != "audrey" {
				t.Fatalf("the follow is audited on the holder as %q, want audrey", e.Actor)
			}
		}
	}
	if follows != 1 {
		t.Fatalf("the holder audited %d live follows, want 1: %+v", follows, audit.Events)
	}
	waitFor(t, "the announcement to leave the bucket once finished", 20*time.Second, func() bool {
		n := 0
		for range bucket.List(context.Background(), "live/s-live-ha/") {
			n++
		}
		return n == 0
	})

	// A server that records what reaches it.
	var hits atomic.Int64
	stranger := func(ln net.Listener) string {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			io.WriteString(w, "attacker's cast\n")
		}))
		if ln != nil {
			srv.Listener.Close()
			srv.Listener = ln
		}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL
	}
	announce := func(id, url string) {
		now := time.Now().UnixNano()
		key := fmt.Sprintf("live/%s/%d.%d.%s", id, now, now, base64.RawURLEncoding.EncodeToString([]byte(url)))
		if err := bucket.Put(context.Background(), key, bytes.NewReader(nil), 0); err != nil {
			t.Fatal(err)
		}
	}
	// followRefused follows id through B until B acts on the announcement
	// (404 before) and returns the error code.
	followRefused := func(id string) (int, string) {
		var status int
		var body []byte
		waitFor(t, "B to act on the announcement of "+id, 20*time.Second, func() bool {
			status, body = w.get(t, b.url+"/api/sessions/"+id+"/cast?follow=1", w.auditor)
			return status != http.StatusNotFound
		})
		var e struct{ Code, Message string }
		json.Unmarshal(body, &e)
		return status, e.Code + ": " + e.Message
	}

	// Not a replica of this CA.
	foreign := stranger(nil)
	announce("s-forged", foreign)
	if status, msg := followRefused("s-forged"); status != http.StatusBadGateway || !strings.Contains(msg, playback.CodeReplicaRefused) ||
		!strings.Contains(msg, "not among the CA's playback replicas") {
		t.Fatalf("a forged announcement: %d %s", status, msg)
	}

	// Registered with the CA as a replica, but serving a certificate the
	// CA's root did not sign.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	jc := playback.JoinConfig{Dir: t.TempDir(), CAURL: w.ca.URL, Fingerprint: w.ca.Fingerprint, URL: "https://" + ln.Addr().String(), Token: w.playbackToken(t)}
	if _, err := playback.EnsureIdentity(context.Background(), jc, time.Now()); err != nil {
		t.Fatal(err)
	}
	impostor := stranger(ln)
	announce("s-impostor", impostor)
	if status, msg := followRefused("s-impostor"); status != http.StatusBadGateway || !strings.Contains(msg, playback.CodeReplicaUnavailable) {
		t.Fatalf("a replica with a certificate not from the CA's root: %d %s", status, msg)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d requests reached servers that are not trusted replicas", n)
	}
}
