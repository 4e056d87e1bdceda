package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
	castore "github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/playback/web/webtest"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// The tests of "an open tier's unrecorded session reaches someone": a
// staging agent whose spool fails like a full disk (ENOSPC on open and
// write), joined to the real CA, reporting to the real playback server,
// with stock OpenSSH ssh as the user.

const bannerPrefix = "sshward: this session is NOT being recorded: "

// flakyProxy forwards TCP to target while up; while down it closes every
// connection at once (a server that is down), including those it carried.
type flakyProxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

func newFlakyProxy(t *testing.T, target string) *flakyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.down.Load() {
				c.Close()
				continue
			}
			wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
		wg.Wait()
	})
	return p
}

func (p *flakyProxy) serve(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() { io.Copy(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

func (p *flakyProxy) setDown(down bool) {
	p.down.Store(down)
	if !down {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *flakyProxy) url() string { return "https://" + p.ln.Addr().String() }

func hostPort(t *testing.T, url string) string {
	t.Helper()
	return strings.TrimPrefix(url, "https://")
}

// unrecordedAgent starts a staging agent joined to w through caURL (the CA
// itself or a proxy), whose spool writes through disk and which reports to
// the playback server at playbackURL. The spool is closed by the returned
// func, after the agent stopped.
func unrecordedAgent(t *testing.T, w *catest.CA, caURL, playbackURL, dataDir string, disk *recordertest.DiskFull, join bool, al *auditLog) (*testAgent, func()) {
	t.Helper()
	sp, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{
		Dir: SpoolDir(dataDir), OpenFile: disk.OpenFile, FlushInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{URL: caURL, Fingerprint: w.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	tok := ""
	if join {
		jt, err := w.Authority.NewJoinToken(context.Background(), ca.JoinTokenRequest{Names: []string{"127.0.0.1", "localhost"}, Tier: api.TierStaging})
		if err != nil {
			t.Fatal(err)
		}
		tok = jt.Token
	}
	home := t.TempDir()
	a := startAgent(t, nil, agentOpts{tier: api.TierStaging, dataDir: dataDir, noToken: true, cfg: func(c *Config) {
		c.CA, c.JoinToken = cl, tok
		c.Spool = RecorderSpool(sp)
		c.Playback = &PlaybackConfig{URL: playbackURL, RootPEM: w.RootPEM}
		c.HostName = "localhost" // a name of its host certificate
		c.LookupUser = testUserLookup(t, home)
		c.UnrecordedRetry = 100 * time.Millisecond
		if al != nil {
			withAudit(al)(c)
		}
	}})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			a.stop()
			sp.Close()
		})
	}
	t.Cleanup(stop)
	return a, stop
}

// stagingKey mints a staging certificate for alice with the tier's real
// user-CA key, logging in as login.
func stagingKey(t *testing.T, w *catest.CA, dir, login, keyID string) *userKey {
	t.Helper()
	now := time.Now()
	return mint(t, dir, w.UserCAs[api.TierStaging], ssh.Certificate{Serial: uint64(now.UnixNano()) &^ (1 << 63), KeyId: keyID,
		ValidPrincipals: []string{login}, ValidAfter: uint64(now.Add(-time.Minute).Unix()),
		ValidBefore: uint64(now.Add(30 * time.Minute).Unix()), Permissions: ssh.Permissions{Extensions: stagingExt()}}, nil)
}

// caUnrecorded waits (bounded) until the CA's audit log holds n reports of
// session id and returns them; it fails on more.
func caUnrecorded(t *testing.T, w *catest.CA, id string, n int) []castore.AuditEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := w.Store.Audit(context.Background(), castore.AuditFilter{Type: api.EventSessionUnrecorded})
		if err != nil {
			t.Fatal(err)
		}
		var got []castore.AuditEvent
		for _, e := range evs {
			if e.Details["session_id"] == id {
				got = append(got, e)
			}
		}
		if len(got) > n {
			t.Fatalf("the CA recorded %d reports of %s, want %d: %+v", len(got), id, n, got)
		}
		if len(got) == n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CA's audit log has %d of %d reports of unrecorded session %s", len(got), n, id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// playbackUnrecorded waits (bounded) until the playback server's audit log
// holds n reports of session id, as an auditor reads them.
func playbackUnrecorded(t *testing.T, stack *webtest.Stack, id string, n int) []store.AuditEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out struct {
			Events   []store.AuditEvent `json:"events"`
			Verified bool               `json:"verified"`
		}
		if err := getAuditor(stack, "/api/audit?type="+api.EventSessionUnrecorded+"&subject="+id, &out); err != nil {
			t.Fatal(err)
		}
		if len(out.Events) > n {
			t.Fatalf("playback recorded %d reports of %s, want %d", len(out.Events), id, n)
		}
		if len(out.Events) == n {
			if !out.Verified {
				t.Error("the playback audit chain does not verify")
			}
			return out.Events
		}
		if time.Now().After(deadline) {
			t.Fatalf("the playback audit log has %d of %d reports of unrecorded session %s", len(out.Events), n, id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkReport asserts what a report says, in the CA's audit and playback's.
func checkReport(t *testing.T, caEv castore.AuditEvent, pbEv store.AuditEvent, login, phase string) {
	t.Helper()
	const reason = "the recording disk of this host is full"
	if caEv.Subject != "alice@local" || caEv.Tier != api.TierStaging || caEv.Actor != "127.0.0.1" || caEv.Reason != reason ||
		caEv.Details["principal"] != login || caEv.Details["phase"] != phase || caEv.Details["severity"] != "alert" ||
		caEv.Details["host_name"] != "localhost" || !strings.Contains(caEv.Details["error"], "no space left on device") {
		t.Errorf("CA audit record %+v", caEv)
	}
	if pbEv.Actor != "host:127.0.0.1" || pbEv.Reason != reason || pbEv.Outcome != "ok" ||
		pbEv.Details["user"] != "alice@local" || pbEv.Details["principal"] != login || pbEv.Details["tier"] != api.TierStaging ||
		pbEv.Details["phase"] != phase || pbEv.Details["host_name"] != "localhost" || pbEv.Details["event_id"] != caEv.Details["event_id"] {
		t.Errorf("playback audit record %+v (CA's %+v)", pbEv, caEv)
	}
}

// TestUnrecordedSessionReachesSomeone: on a staging host (fails open) whose
// spool disk is full, a session that cannot be recorded from its start, and
// one whose recording fails while it runs, go on; the user reads the
// banner on stderr, the CA's and the playback server's audit logs get the
// report (who, which principal, host, tier, why), and `sshward-agent
// status` counts and lists them with nothing left to deliver.
func TestUnrecordedSessionReachesSomeone(t *testing.T) {
	stack := webtest.New(t)
	w := stack.CA
	disk := &recordertest.DiskFull{}
	al := &auditLog{}
	dataDir := filepath.Join(t.TempDir(), "data")
	a, _ := unrecordedAgent(t, w, w.URL, stack.URL, dataDir, disk, true, al)
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	sessionOf := func(keyID string) string {
		t.Helper()
		return al.find(t, func(ev AuditEvent) bool { return ev.Action == AuditSessionUnrecorded && ev.KeyID == keyID }).SessionID
	}

	t.Run("from the start", func(t *testing.T) {
		keyID := "alice@local tier=staging case unrecorded start"
		k := stagingKey(t, w, c.home, login, keyID)
		disk.SetFull(true)
		defer disk.SetFull(false)
		out, errOut, err := c.run(k, login, nil, "echo ran-unrecorded")
		if err != nil || out != "ran-unrecorded\n" {
			t.Fatalf("the open tier did not run the session: %v %q %q", err, out, errOut)
		}
		if !strings.Contains(errOut, bannerPrefix+"the recording disk of this host is full.") {
			t.Errorf("the user was not told: stderr %q", errOut)
		}
		id := sessionOf(keyID)
		caEv := caUnrecorded(t, w, id, 1)[0]
		pbEv := playbackUnrecorded(t, stack, id, 1)[0]
		checkReport(t, caEv, pbEv, login, api.UnrecordedAtStart)
		if caEv.Serial != k.cert.Serial || caEv.KeyID != keyID || caEv.Details["serial_known"] != "no" {
			t.Errorf("CA record of a certificate it never issued: %+v", caEv)
		}
	})

	t.Run("while running", func(t *testing.T) {
		keyID := "alice@local tier=staging case unrecorded running"
		k := stagingKey(t, w, c.home, login, keyID)
		defer disk.SetFull(false)
		lines, wait := c.stream(t, k, login, "echo started; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do echo tick $i; sleep 0.1; done; echo finished")
		if l := <-lines; l != "started" {
			t.Fatalf("first line %q", l)
		}
		disk.SetFull(true)
		var got []string
		for l := range lines {
			got = append(got, l)
		}
		errOut, err := wait()
		if err != nil || !strings.Contains(strings.Join(got, "\n"), "finished") {
			t.Fatalf("the open tier ended a session for its recording: %v %q %q", err, got, errOut)
		}
		if !strings.Contains(errOut, bannerPrefix+"the recording disk of this host is full.") {
			t.Errorf("the user was not told: stderr %q", errOut)
		}
		id := sessionOf(keyID)
		checkReport(t, caUnrecorded(t, w, id, 1)[0], playbackUnrecorded(t, stack, id, 1)[0], login, api.UnrecordedDuring)
	})

	// A command line longer than a report may carry, and not UTF-8: the
	// report is cut to fit rather than refused as malformed (an alert lost).
	t.Run("long command", func(t *testing.T) {
		keyID := "alice@local tier=staging case unrecorded long"
		k := stagingKey(t, w, c.home, login, keyID)
		disk.SetFull(true)
		defer disk.SetFull(false)
		remote := "echo " + strings.Repeat("x", 6000) + " \xff\xfe end"
		out, errOut, err := c.run(k, login, nil, remote)
		if err != nil || !strings.HasSuffix(out, " end\n") || !strings.Contains(errOut, bannerPrefix) {
			t.Fatalf("long command: %v %q", err, errOut)
		}
		caEv := caUnrecorded(t, w, sessionOf(keyID), 1)[0]
		if cmd := caEv.Details["command"]; len(cmd) > 4096 || !strings.HasPrefix(cmd, "echo xxx") || !strings.HasSuffix(cmd, "…") {
			t.Errorf("CA record of a long command: %d bytes, %q…", len(cmd), cmd[:min(len(cmd), 40)])
		}
		playbackUnrecorded(t, stack, sessionOf(keyID), 1)
	})

	t.Run("status", func(t *testing.T) {
		// The CA and playback have every report (above); the agent marks
		// one delivered once their answer is back: wait for that (bounded).
		// Under load (make test runs packages side by side) an answer can
		// take seconds; the bound only stops a hung test.
		var st *Status
		deadline := time.Now().Add(30 * time.Second)
		for {
			var err error
			if st, err = ReadStatus(dataDir, time.Now()); err != nil {
				t.Fatal(err)
			}
			if u := st.Unrecorded; u == nil || (u.PendingCA == 0 && u.PendingPlayback == 0) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		u := st.Unrecorded
		if u == nil || u.Count != 3 || u.PendingCA != 0 || u.PendingPlayback != 0 || len(u.Last) != 3 {
			t.Fatalf("status unrecorded = %+v", u)
		}
		newest := u.Last[1] // before the long command's
		if newest.Event.KeyID != "alice@local tier=staging case unrecorded running" || newest.CA.DeliveredAt.IsZero() ||
			newest.Playback.DeliveredAt.IsZero() || newest.Event.Phase != api.UnrecordedDuring {
			t.Errorf("newest report %+v", newest)
		}
		var text bytes.Buffer
		if err := st.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"UNRECORDED SESSIONS:  3", "reports not yet delivered: 0 to the CA, 0 to playback",
			newest.Event.SessionID, "the recording disk of this host is full", "delivered"} {
			if !strings.Contains(text.String(), want) {
				t.Errorf("status text lacks %q:\n%s", want, text.String())
			}
		}
		raw, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			Unrecorded struct {
				Count int `json:"count"`
				Last  []struct {
					Event struct {
						SessionID string `json:"session_id"`
						Reason    string `json:"reason"`
					} `json:"event"`
				} `json:"last"`
			} `json:"unrecorded"`
		}
		if err := json.Unmarshal(raw, &back); err != nil || back.Unrecorded.Count != 3 ||
			back.Unrecorded.Last[1].Event.SessionID != newest.Event.SessionID || back.Unrecorded.Last[1].Event.Reason == "" {
			t.Errorf("status --json unrecorded = %+v (%v)", back.Unrecorded, err)
		}
	})
}

// TestUnrecordedReportWaitsForCAAndPlayback: the CA and the playback server
// are down when a session goes on unrecorded. The session is not held up;
// the report waits in the data directory (status shows it pending, with
// the error), survives an agent restart, and reaches both audit logs,
// once each, after they are back.
func TestUnrecordedReportWaitsForCAAndPlayback(t *testing.T) {
	stack := webtest.New(t)
	w := stack.CA
	caProxy := newFlakyProxy(t, hostPort(t, w.URL))
	pbProxy := newFlakyProxy(t, hostPort(t, stack.URL))
	disk := &recordertest.DiskFull{}
	al := &auditLog{}
	dataDir := filepath.Join(t.TempDir(), "data")
	a, stop := unrecordedAgent(t, w, caProxy.url(), pbProxy.url(), dataDir, disk, true, al)
	c := realSSHClient(t, w, a)
	login := currentUser(t)

	caProxy.setDown(true)
	pbProxy.setDown(true)
	keyID := "alice@local tier=staging case unrecorded ca down"
	k := stagingKey(t, w, c.home, login, keyID)
	disk.SetFull(true)
	out, errOut, err := c.run(k, login, nil, "echo ran-while-ca-down")
	disk.SetFull(false)
	if err != nil || out != "ran-while-ca-down\n" || !strings.Contains(errOut, bannerPrefix) {
		t.Fatalf("session with the CA down: %v %q %q", err, out, errOut)
	}
	id := al.find(t, func(ev AuditEvent) bool { return ev.Action == AuditSessionUnrecorded && ev.KeyID == keyID }).SessionID

	// Pending, with the reason, after a few attempts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := ReadStatus(dataDir, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		u := st.Unrecorded
		if u.Count == 1 && u.PendingCA == 1 && u.PendingPlayback == 1 && u.Last[0].CA.Attempts >= 2 &&
			u.Last[0].CA.LastError != "" && u.Last[0].Playback.LastError != "" && u.Last[0].Event.SessionID == id {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status while the CA is down: %+v", u)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if evs, _ := w.Store.Audit(context.Background(), castore.AuditFilter{Type: api.EventSessionUnrecorded}); len(evs) != 0 {
		t.Fatalf("the CA recorded a report through a proxy that was down: %+v", evs)
	}

	// The agent restarts while they are still down: the report is on disk.
	stop()
	a2, _ := unrecordedAgent(t, w, caProxy.url(), pbProxy.url(), dataDir, disk, false, nil)
	_ = a2
	caProxy.setDown(false)
	pbProxy.setDown(false)
	back := time.Now()
	caEv := caUnrecorded(t, w, id, 1)[0]
	pbEv := playbackUnrecorded(t, stack, id, 1)[0]
	t.Logf("report in both audit logs %v after the CA and playback came back (retry every 100ms)", time.Since(back).Round(time.Millisecond))
	checkReport(t, caEv, pbEv, login, api.UnrecordedAtStart)

	deadline = time.Now().Add(10 * time.Second)
	for {
		st, err := ReadStatus(dataDir, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if u := st.Unrecorded; u.PendingCA == 0 && u.PendingPlayback == 0 && u.Count == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after the CA returned: %+v", st.Unrecorded)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Once delivered, never again: no duplicate after more retry rounds.
	time.Sleep(300 * time.Millisecond)
	caUnrecorded(t, w, id, 1)
	playbackUnrecorded(t, stack, id, 1)
}

// TestUnrecordedReportRefusals: the report endpoints take nothing they
// cannot attribute. A staging host's report of a production session is
// refused by the CA and by playback (and is not retried); an unsigned
// report is refused with 401 by both. Nothing is recorded as a report.
func TestUnrecordedReportRefusals(t *testing.T) {
	stack := webtest.New(t)
	w := stack.CA
	a, _ := unrecordedAgent(t, w, w.URL, stack.URL, filepath.Join(t.TempDir(), "data"), &recordertest.DiskFull{}, true, nil)
	ev := api.UnrecordedSession{EventID: "forged-1", SessionID: "forged-session-1", Identity: "mallory@local",
		Principal: "root", Host: "localhost", Tier: api.TierProduction, Phase: api.UnrecordedAtStart,
		Reason: "made up", At: time.Now()}
	ctx := context.Background()
	var final *finalError
	if err := a.srv.reportUnrecordedCA(ctx, ev); !errors.As(err, &final) || !strings.Contains(final.msg, "403") {
		t.Errorf("CA: staging host reporting a production session: %v", err)
	}
	if err := a.srv.reportUnrecordedPlayback(ctx, ev); !errors.As(err, &final) || !strings.Contains(final.msg, "403") {
		t.Errorf("playback: staging host reporting a production session: %v", err)
	}
	for _, u := range []string{w.URL + api.PathHostUnrecorded, stack.URL + api.PlaybackUnrecordedPath(ev.SessionID)} {
		body, _ := json.Marshal(ev)
		resp, err := stack.HTTPClient().Post(u, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("unsigned report to %s: %d, want 401", u, resp.StatusCode)
		}
	}
	if evs, _ := w.Store.Audit(ctx, castore.AuditFilter{Type: api.EventSessionUnrecorded}); len(evs) != 0 {
		t.Errorf("the CA recorded a refused report: %+v", evs)
	}
	var out struct {
		Events []store.AuditEvent `json:"events"`
	}
	if err := getAuditor(stack, "/api/audit?type="+api.EventSessionUnrecorded, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Events) != 1 || out.Events[0].Outcome != "refused" || !strings.Contains(out.Events[0].Reason, "does not accept production") {
		t.Errorf("playback audit of the refused report: %+v", out.Events)
	}
}
