package playback_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/recorder"
)

// TestAccess sends every route every kind of credential: nothing, a wrong
// one, a host certificate from another CA, a user certificate, an expired
// host certificate, an engineer's session (Bearer and cookie) and an
// auditor's. Only agents with a host certificate from our CA may ingest,
// only auditors may read.
func TestAccess(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	good := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	// Ingest one recording so that the per-session routes have something.
	a := w.startAgent(t, good, srv.url, agentOpts{})
	rec := a.create(t, "s1", "staging", false)
	writeOutput(t, a, rec, 0, 3)
	closeRec(t, rec)
	w.shipped(t, a, srv.url, "s1")

	otherCA := newHost(t, "web1.staging", catest.NewSigner(t), ssh.HostCert)
	userCert := newHost(t, "web1.staging", w.ca.UserCAs["staging"], ssh.UserCert)
	userByHostCA := newHost(t, "web1.staging", w.ca.HostCA, ssh.UserCert)
	expired := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	expired.cert.ValidBefore = uint64(time.Now().Add(-time.Minute).Unix())
	if err := expired.cert.SignCert(rand.Reader, w.ca.HostCA); err != nil {
		t.Fatal(err)
	}

	meta, _ := json.Marshal(recorder.Metadata{SessionID: "s2", Kind: recorder.KindShell, Tier: "staging"})
	line := []byte(`{"version":2,"width":80,"height":24}` + "\n")
	finish, _ := json.Marshal(recorder.IngestFinishRequest{Metadata: recorder.Metadata{SessionID: "s2"}, Signature: "AAAA"})
	type route struct {
		method, path string
		body         []byte
		header       map[string]string
	}
	ingest := []route{
		{"POST", "/v1/ingest/s2/start", meta, map[string]string{"Content-Type": "application/json"}},
		{"PUT", "/v1/ingest/s2/chunk?offset=0", line, map[string]string{recorder.ChunkDigestHeader: recorder.ChunkDigest(line)}},
		{"POST", "/v1/ingest/s2/finish", finish, map[string]string{"Content-Type": "application/json"}},
		{"GET", "/v1/ingest/s2/unknown", nil, nil},
	}
	read := []route{
		{"GET", "/api/sessions", nil, nil},
		{"GET", "/api/sessions?q=output", nil, nil},
		{"GET", "/api/sessions/s1", nil, nil},
		{"GET", "/api/sessions/s1/cast", nil, nil},
		{"GET", "/api/sessions/s1/cast?follow=1", nil, nil},
		{"GET", "/api/sessions/s1/export", nil, nil},
		{"GET", "/api/search?q=output", nil, nil},
		{"GET", "/api/audit", nil, nil},
		{"GET", "/api/no-such-thing", nil, nil},
		{"POST", "/api/no-such-thing", nil, nil},
	}
	type cred struct {
		name  string
		apply func(r *http.Request, body []byte)
	}
	signWith := func(h *host) func(*http.Request, []byte) {
		return func(r *http.Request, body []byte) {
			if err := hostauth.Sign(r, body, h.cert, h.signer, time.Now(), rand.Reader); err != nil {
				t.Fatal(err)
			}
		}
	}
	bearer := func(tok string) func(*http.Request, []byte) {
		return func(r *http.Request, _ []byte) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	cookie := func(tok string) func(*http.Request, []byte) {
		return func(r *http.Request, _ []byte) { r.AddCookie(&http.Cookie{Name: "sshward_session", Value: tok}) }
	}
	none := func(*http.Request, []byte) {}
	hc := w.httpClient(t)
	do := func(rt route, c cred) (int, string) {
		req, _ := http.NewRequest(rt.method, srv.url+rt.path, bytes.NewReader(rt.body))
		for k, v := range rt.header {
			req.Header.Set(k, v)
		}
		c.apply(req, rt.body)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		routes []route
		cred   cred
		want   int // 0: anything but 401 and 403
	}{
		{ingest, cred{"no credential", none}, 401},
		{ingest, cred{"auditor session", bearer(w.auditor)}, 401},
		{ingest, cred{"host cert from another CA", signWith(otherCA)}, 401},
		{ingest, cred{"user cert from a user CA", signWith(userCert)}, 401},
		{ingest, cred{"user cert from the host CA", signWith(userByHostCA)}, 401},
		{ingest, cred{"expired host cert", signWith(expired)}, 401},
		{ingest, cred{"valid host cert", signWith(good)}, 0},
		{read, cred{"no credential", none}, 401},
		{read, cred{"unknown token", bearer("sws_not-a-session")}, 401},
		{read, cred{"host signature", signWith(good)}, 401},
		{read, cred{"engineer bearer", bearer(w.engineer)}, 403},
		{read, cred{"engineer cookie", cookie(w.engineer)}, 403},
		// A login session (it can mint certificates) is never accepted,
		// even an auditor's: readers send reader tokens.
		{read, cred{"auditor login session", bearer(w.ca.Login(t, "audrey", pw, ""))}, 401},
		{read, cred{"auditor bearer", bearer(w.auditor)}, 0},
		{read, cred{"auditor cookie", cookie(w.auditor)}, 0},
	}
	for _, tc := range tests {
		for _, rt := range tc.routes {
			t.Run(tc.cred.name+" "+rt.method+" "+rt.path, func(t *testing.T) {
				status, body := do(rt, tc.cred)
				switch {
				case tc.want != 0 && status != tc.want:
					t.Fatalf("status %d, want %d: %s", status, tc.want, body)
				case tc.want == 0 && (status == 401 || status == 403 || status >= 500):
					t.Fatalf("status %d: %s", status, body)
				case tc.want == 401 && !strings.Contains(body, `"unauthenticated"`),
					tc.want == 403 && !strings.Contains(body, `"forbidden"`):
					t.Fatalf("error body %s", body)
				}
			})
		}
	}

	// Logging out needs a session, any session; it ends it at the CA.
	eng := w.ca.ReaderToken(t, w.ca.Login(t, "eve", pw, ""))
	if status, _ := do(route{"POST", "/api/logout", nil, nil}, cred{"none", none}); status != 401 {
		t.Fatalf("logout without a session: %d", status)
	}
	if status, _ := do(route{"POST", "/api/logout", nil, nil}, cred{"engineer", bearer(eng)}); status != http.StatusNoContent {
		t.Fatalf("engineer logout: %d", status)
	}
	if _, err := w.ca.Client(t, eng).Session(t.Context()); err == nil {
		t.Fatal("the session still works at the CA after logout")
	}
}

func TestWebLogin(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	hc := w.httpClient(t)
	post := func(ct, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.url+"/api/login", strings.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	tests := []struct {
		name, ct, body string
		want           int
	}{
		{"form post refused", "application/x-www-form-urlencoded", "user=audrey&password=x", http.StatusUnsupportedMediaType},
		{"wrong password", "application/json", `{"user":"audrey","password":"nope"}`, http.StatusUnauthorized},
		{"unknown field", "application/json", `{"user":"audrey","password":"x","admin":true}`, http.StatusBadRequest},
		{"auditor", "application/json", `{"user":"audrey","password":"` + pw + `"}`, http.StatusOK},
		{"engineer logs in but reads nothing", "application/json", `{"user":"eve","password":"` + pw + `"}`, http.StatusOK},
	}
	cookies := map[string]*http.Cookie{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(tc.ct, tc.body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			for _, c := range resp.Cookies() {
				if c.Name == "sshward_session" {
					if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Value == "" {
						t.Fatalf("cookie %+v", c)
					}
					cookies[tc.name] = c
				}
			}
			if (tc.want == http.StatusOK) != (cookies[tc.name] != nil) {
				t.Fatalf("cookie set: %v", cookies[tc.name] != nil)
			}
		})
	}
	for name, want := range map[string]int{"auditor": 200, "engineer logs in but reads nothing": 403} {
		req, _ := http.NewRequest(http.MethodGet, srv.url+"/api/sessions", nil)
		req.AddCookie(cookies[name])
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s with the cookie: %d, want %d", name, resp.StatusCode, want)
		}
	}
	var audit struct {
		Events []struct {
			Type, Actor, Outcome string
		} `json:"events"`
	}
	w.getJSON(t, srv.url+"/api/audit", w.auditor, &audit)
	var got []string
	for _, e := range audit.Events {
		got = append(got, e.Type+" "+e.Actor+" "+e.Outcome)
	}
	for _, want := range []string{"login audrey refused", "login audrey ok", "login eve ok", "access.denied eve refused"} {
		if !contains(got, want) {
			t.Errorf("audit %v lacks %q", got, want)
		}
	}
}
