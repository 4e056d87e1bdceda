package playback_test

import (
	"context"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/store"
)

// typeCommand types cmd as a user would (input, then its echo), one key
// every 50 ms, then Enter.
func typeCommand(t testing.TB, a *agent, rec interface {
	Input([]byte) error
	Output([]byte) error
}, cmd string) {
	t.Helper()
	for _, c := range cmd {
		if err := rec.Input([]byte(string(c))); err != nil {
			t.Fatal(err)
		}
		rec.Output([]byte(string(c)))
		a.clock.advance(50 * time.Millisecond)
	}
	rec.Input([]byte("\r"))
	rec.Output([]byte("\r\n"))
}

func TestSearchFindsACommandTypedInProduction(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	h := newHost(t, "db1.production", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, srv.url, agentOpts{})

	prod := a.create(t, "s-prod", "production", true) // the tier records input
	prod.Output([]byte("\x1b[1;31mroot@db1\x1b[0m:~# "))
	a.clock.advance(2500 * time.Millisecond)
	typeCommand(t, a, prod, "systemctl restart nginx")
	a.clock.advance(time.Second)
	prod.Output([]byte("root@db1:~# "))
	closeRec(t, prod)

	stag := a.create(t, "s-stag", "staging", false) // input not recorded
	stag.Output([]byte("$ "))
	a.clock.advance(time.Second)
	typeCommand(t, a, stag, "systemctl restart nginx")
	closeRec(t, stag)
	w.shipped(t, a, srv.url, "s-prod")
	w.shipped(t, a, srv.url, "s-stag")
	for _, id := range []string{"s-prod", "s-stag"} {
		if err := srv.store.WaitIndexed(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}

	var res struct {
		Hits []store.Hit `json:"hits"`
	}
	w.getJSON(t, srv.url+"/api/search?q="+url.QueryEscape("systemctl restart"), w.auditor, &res)
	var typed *store.Hit
	codes := map[string]string{}
	for i, hit := range res.Hits {
		codes[hit.SessionID] += hit.Code
		if hit.SessionID == "s-prod" && hit.Code == "i" {
			typed = &res.Hits[i]
		}
	}
	if typed == nil {
		t.Fatalf("no input hit in the production session: %+v", res.Hits)
	}
	if typed.Text != "systemctl restart nginx" || math.Abs(typed.Time-2.5) > 0.001 {
		t.Fatalf("hit %+v, want the command at 2.5 s", *typed)
	}
	if codes["s-prod"] != "oi" || codes["s-stag"] != "o" { // hits in time order
		t.Fatalf("hit codes per session %v: production has input and output, staging output only", codes)
	}

	var list struct {
		Sessions []playback.SessionSummary `json:"sessions"`
	}
	w.getJSON(t, srv.url+"/api/sessions?tier=production&q=nginx", w.auditor, &list)
	if len(list.Sessions) != 1 || list.Sessions[0].ID != "s-prod" || len(list.Sessions[0].Hits) == 0 {
		t.Fatalf("filtered search %+v", list.Sessions)
	}
	w.getJSON(t, srv.url+"/api/sessions?q=nginx", w.auditor, &list)
	if len(list.Sessions) != 2 {
		t.Fatalf("search over both tiers %+v", list.Sessions)
	}
	if status, _ := w.get(t, srv.url+"/api/search?q=%21", w.auditor); status != 400 {
		t.Fatalf("a query without a word: %d", status)
	}
}

func TestRetention(t *testing.T) {
	w := newWorld(t)
	settings, err := playback.ParseSettings([]byte(playback.DefaultConfigYAML))
	if err != nil {
		t.Fatal(err)
	}
	var offset atomic.Int64 // how far the server's clock is ahead
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	srv := w.startServer(t, serverOpts{now: now, retention: settings.Retention})
	h := newHost(t, "web1", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, srv.url, agentOpts{})
	a.clock.set(time.Now())
	for _, tier := range []string{"staging", "production", "break-glass"} {
		rec := a.create(t, "s-"+tier, tier, false)
		writeOutput(t, a, rec, 0, 3)
		closeRec(t, rec)
		w.shipped(t, a, srv.url, "s-"+tier)
	}
	ctx := context.Background()
	tests := []struct {
		ahead time.Duration
		gone  []string
		kept  []string
	}{
		{29 * 24 * time.Hour, nil, []string{"s-staging", "s-production", "s-break-glass"}},
		{31 * 24 * time.Hour, []string{"s-staging"}, []string{"s-production", "s-break-glass"}},
		{366 * 24 * time.Hour, []string{"s-production"}, []string{"s-break-glass"}},
		{50 * 365 * 24 * time.Hour, nil, []string{"s-break-glass"}},
	}
	for _, tc := range tests {
		offset.Store(int64(tc.ahead))
		n, err := srv.Sweep(ctx)
		if err != nil || n != len(tc.gone) {
			t.Fatalf("%s ahead: swept %d (%v), want %d", tc.ahead, n, err, len(tc.gone))
		}
		for _, id := range tc.gone {
			if status, _ := w.get(t, srv.url+"/api/sessions/"+id, w.auditor); status != 404 {
				t.Errorf("%s ahead: %s answers %d", tc.ahead, id, status)
			}
			if _, err := os.Stat(filepath.Join(srv.dir, "blobs", id+".cast")); !os.IsNotExist(err) {
				t.Errorf("%s: cast left: %v", id, err)
			}
		}
		for _, id := range tc.kept {
			if status, _ := w.get(t, srv.url+"/api/sessions/"+id, w.auditor); status != 200 {
				t.Errorf("%s ahead: %s answers %d", tc.ahead, id, status)
			}
		}
	}
	evs, err := srv.store.Audit(ctx, store.AuditFilter{Type: "retention.delete"})
	if err != nil || len(evs) != 2 || evs[0].Subject != "s-staging" || evs[1].Subject != "s-production" || evs[0].Details["retention"] != "720h0m0s" {
		t.Fatalf("retention audit %+v %v", evs, err)
	}
}
