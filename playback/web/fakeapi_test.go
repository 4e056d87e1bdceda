package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sshward/sshward/playback/web"
)

// fakeAPI is a hand-written stand-in for the playback server's reader API
// (notes/playback-api.md), enough to drive the UI through states the real
// server reaches only with a whole agent behind it: a session that is live
// and grows while the page watches, a 64-bit serial, a large recording. The
// journey test against the real server is in journey_test.go.
type fakeAPI struct {
	mu       sync.Mutex // guards the fields below
	sessions []*fakeSession
	changed  chan struct{} // closed and replaced whenever a cast grows or ends
}

type fakeSession struct {
	detail map[string]any // GET /api/sessions/{id}; "live" follows the session
	cast   []byte
	live   bool
}

var fakeTokens = map[string]string{"auditor": "tok-auditor", "engineer": "tok-engineer"}

func newFakeAPI() *fakeAPI { return &fakeAPI{changed: make(chan struct{})} }

func (f *fakeAPI) add(detail map[string]any, cast []byte, live bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	detail["live"] = live
	f.sessions = append(f.sessions, &fakeSession{detail: detail, cast: cast, live: live})
}

// appendCast grows a live session and wakes its followers; finish ends it.
func (f *fakeAPI) appendCast(id string, lines string, finish bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.sessions {
		if s.detail["id"] == id {
			s.cast = append(s.cast, lines...)
			if finish {
				// As the playback server answers: finished, with every
				// stored byte counted (a follower checks it has them all).
				s.live = false
				s.detail["live"] = false
				s.detail["bytes"] = len(s.cast)
			}
		}
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// serve starts the fake API with the real UI mounted the way the playback
// server mounts it, over TLS so the Secure cookie behaves as in production.
func (f *fakeAPI) serve(t testing.TB, ui http.Handler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /", ui)
	mux.HandleFunc("POST /api/login", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ User, Password, OTP string }
		if json.NewDecoder(r.Body).Decode(&in) != nil || in.Password != "pw" || fakeTokens[in.User] == "" {
			writeFake(w, http.StatusUnauthorized, map[string]any{"code": "unauthenticated", "message": "wrong user, password or code"})
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "sshward_session", Value: fakeTokens[in.User], Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
		writeFake(w, http.StatusOK, map[string]any{"user": in.User, "groups": []string{in.User + "s"}})
	})
	mux.HandleFunc("POST /api/logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "sshward_session", Value: "", Path: "/", MaxAge: -1})
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/sessions", f.auditor(f.list))
	mux.HandleFunc("GET /api/search", f.auditor(f.search))
	mux.HandleFunc("GET /api/sessions/{id}", f.auditor(f.detail))
	mux.HandleFunc("GET /api/sessions/{id}/cast", f.auditor(f.cast))
	mux.HandleFunc("GET /api/sessions/{id}/export", f.auditor(f.cast))
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func (f *fakeAPI) auditor(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("sshward_session")
		switch {
		case err != nil || (c.Value != fakeTokens["auditor"] && c.Value != fakeTokens["engineer"]):
			writeFake(w, http.StatusUnauthorized, map[string]any{"code": "unauthenticated", "message": "log in first"})
		case c.Value != fakeTokens["auditor"]:
			writeFake(w, http.StatusForbidden, map[string]any{"code": "forbidden", "message": "only auditors may view recordings"})
		default:
			h(w, r)
		}
	}
}

func (f *fakeAPI) find(id string) *fakeSession {
	for _, s := range f.sessions {
		if s.detail["id"] == id {
			return s
		}
	}
	return nil
}

// hits finds q in the output lines of cast, as the server's search would.
func fakeHits(cast []byte, q string) []map[string]any {
	var hits []map[string]any
	for _, line := range strings.Split(string(cast), "\n") {
		var ev []any
		if json.Unmarshal([]byte(line), &ev) != nil || len(ev) != 3 {
			continue
		}
		if data, _ := ev[2].(string); ev[1] == "o" && strings.Contains(data, q) {
			hits = append(hits, map[string]any{"time": ev[0], "code": "o", "text": data})
		}
	}
	return hits
}

func (f *fakeAPI) list(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := r.URL.Query().Get("q")
	out := []map[string]any{}
	for _, s := range f.sessions {
		sum := map[string]any{}
		for k, v := range s.detail {
			if k != "metadata" && k != "markers" {
				sum[k] = v
			}
		}
		if q != "" {
			hits := fakeHits(s.cast, q)
			if len(hits) == 0 {
				continue
			}
			sum["hits"] = hits
		}
		out = append(out, sum)
	}
	writeFake(w, http.StatusOK, map[string]any{"sessions": out})
}

func (f *fakeAPI) search(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := r.URL.Query().Get("q")
	hits := []map[string]any{}
	for _, s := range f.sessions {
		for _, h := range fakeHits(s.cast, q) {
			h["session_id"] = s.detail["id"]
			hits = append(hits, h)
		}
	}
	writeFake(w, http.StatusOK, map[string]any{"hits": hits})
}

func (f *fakeAPI) detail(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.find(r.PathValue("id"))
	if s == nil {
		writeFake(w, http.StatusNotFound, map[string]any{"code": "not_found", "message": "no such session"})
		return
	}
	// The serial goes out as a bare 64-bit JSON number, as encoding/json
	// writes a uint64.
	b, _ := json.Marshal(s.detail)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// cast writes the recording; with follow=1 it keeps the response open and
// writes what a live session appends until the session ends.
func (f *fakeAPI) cast(w http.ResponseWriter, r *http.Request) {
	follow := r.URL.Query().Get("follow") == "1"
	w.Header().Set("Content-Type", "application/x-asciicast")
	sent := 0
	for {
		f.mu.Lock()
		s := f.find(r.PathValue("id"))
		if s == nil {
			f.mu.Unlock()
			http.NotFound(w, r)
			return
		}
		chunk, live, changed := s.cast[sent:], s.live, f.changed
		sent = len(s.cast)
		f.mu.Unlock()
		w.Write(chunk)
		if !follow || !live {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

func writeFake(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// castLines builds an asciicast v2 recording: header, then the events.
func castLines(events ...string) []byte {
	var b strings.Builder
	b.WriteString(`{"version":2,"width":80,"height":24,"timestamp":1763700000,"env":{"TERM":"xterm-256color"}}` + "\n")
	for _, e := range events {
		b.WriteString(e + "\n")
	}
	return []byte(b.String())
}

// ev is one asciicast event line.
func ev(t float64, code, data string) string {
	d, _ := json.Marshal(data)
	return fmt.Sprintf("[%.6f, %q, %s]", t, code, d)
}

func mustUI(t testing.TB) *web.UI {
	t.Helper()
	ui, err := web.New(web.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ui.CheckPlayer(); err != nil {
		t.Fatalf("%v (the tests need the player: make web)", err)
	}
	return ui
}
