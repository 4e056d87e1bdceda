package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/playback/web/webtest"
)

// TestSessionsPaging is issue 9's "Listing says when it is cut": with more
// recordings than one page on a real playback server, `sshward sessions`
// says on stderr what it left out (--json stays a plain list), --all and
// --limit N get every one asked for, and paging the API by its cursor
// neither repeats nor skips a session, even when 60 of them share one start
// time (a page boundary inside them) and a new session arrives between two
// pages.
func TestSessionsPaging(t *testing.T) {
	const (
		tied  = 60 // sessions that start at the same moment
		total = 130
	)
	st := webtest.New(t)
	var sessions []webtest.Session
	for i := range total {
		s := webtest.Session{ID: fmt.Sprintf("s-page-%03d", i), User: []string{"pat", "sam"}[i%2], Tier: "staging"}
		if i >= tied {
			// Moves the spool clock on: the next session starts a second later.
			s.Steps = []webtest.Step{{After: time.Second, Output: "$ "}}
		}
		sessions = append(sessions, s)
	}
	st.RecordMany(t, sessions)
	home := st.Home(t, webtest.Auditor)

	jsonList := func(t *testing.T, args ...string) ([]string, string) {
		t.Helper()
		out, stderr, code := sshward(t, home, append([]string{"sessions", "--json"}, args...)...)
		var list []sessionSummary
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
			t.Fatalf("sessions --json %v: exit %d, want a JSON list:\n%s\n%s", args, code, out, stderr)
		}
		ids := make([]string, len(list))
		for i, s := range list {
			ids[i] = s.ID
		}
		return ids, stderr
	}
	const cut100 = "sshward: showing 100 of 130 sessions; use --all or --limit N for more\n"

	all, stderr := jsonList(t, "--all")
	t.Run("all", func(t *testing.T) {
		if stderr != "" {
			t.Errorf("--all says %q, want nothing", stderr)
		}
		checkEvery(t, all, total)
	})

	t.Run("table says it is cut", func(t *testing.T) {
		out, stderr, code := sshward(t, home, "sessions")
		rows := strings.Count(out, "s-page-")
		if code != 0 || rows != 100 || stderr != cut100 {
			t.Errorf("sessions: exit %d, %d rows, stderr %q; want 100 rows and %q", code, rows, stderr, cut100)
		}
	})

	tests := []struct {
		name string
		args []string
		n    int
		say  string // on stderr
	}{
		{"json default", nil, 100, cut100},
		{"limit below a page", []string{"--limit", "7"}, 7, "sshward: showing 7 of 130 sessions; use --all or --limit N for more\n"},
		{"limit of every one", []string{"--limit", "130"}, 130, ""},
		{"limit above every one", []string{"--limit", "5000"}, 130, ""},
		{"filter counts what it matches", []string{"--user", "pat", "--limit", "10"}, 10, "sshward: showing 10 of 65 sessions; use --all or --limit N for more\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, stderr := jsonList(t, tt.args...)
			if len(ids) != tt.n || stderr != tt.say {
				t.Fatalf("%d sessions, stderr %q; want %d and %q", len(ids), stderr, tt.n, tt.say)
			}
			if tt.name != "filter counts what it matches" && !slices.Equal(ids, all[:tt.n]) {
				t.Errorf("not the newest %d in order: %v", tt.n, ids)
			}
		})
	}

	t.Run("usage", func(t *testing.T) {
		if _, stderr, code := sshward(t, home, "sessions", "--all", "--limit", "5"); code != 2 || !strings.Contains(stderr, "exclude each other") {
			t.Errorf("--all --limit: exit %d %q, want a usage error", code, stderr)
		}
	})

	// The API's cursor, 7 at a time: 60 sessions share a start, so most
	// boundaries fall between sessions with the same start time.
	page := func(t *testing.T, q url.Values) (ids []string, next string, status int, msg string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, st.URL+"/api/sessions?"+q.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+st.AuditorToken)
		resp, err := st.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var res struct {
			Sessions []struct {
				ID string `json:"id"`
			} `json:"sessions"`
			NextCursor string `json:"next_cursor"`
			Message    string `json:"message"`
		}
		if err := json.Unmarshal(b, &res); err != nil {
			t.Fatalf("GET /api/sessions: %v: %s", err, b)
		}
		for _, s := range res.Sessions {
			ids = append(ids, s.ID)
		}
		return ids, res.NextCursor, resp.StatusCode, res.Message
	}
	t.Run("cursor pages", func(t *testing.T) {
		var got []string
		cursor, pages := "", 0
		for {
			q := url.Values{"limit": {"7"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			ids, next, status, msg := page(t, q)
			if status != http.StatusOK {
				t.Fatalf("page %d: %d %s", pages, status, msg)
			}
			got = append(got, ids...)
			if pages++; next == "" || pages > total {
				break
			}
			if pages == 3 {
				// A session that starts now must not shift the pages.
				st.Record(t, webtest.Session{ID: "s-newcomer", User: "pat", Tier: "staging"})
			}
			cursor = next
		}
		if !slices.Equal(got, all) {
			t.Errorf("paging by 7 gave %d sessions, want the %d of --all in the same order:\n%v", len(got), len(all), got)
		}
		if pages != 19 {
			t.Errorf("%d pages, want 19 (130 by 7)", pages)
		}
	})

	t.Run("forged cursor", func(t *testing.T) {
		for _, c := range []string{"nope", "MTIzOi4uL2V0Yy9wYXNzd2Q"} { // the second is "123:../etc/passwd"
			_, _, status, msg := page(t, url.Values{"cursor": {c}})
			if status != http.StatusBadRequest || !strings.Contains(msg, "first page") {
				t.Errorf("cursor %q: %d %q, want 400 saying to list from the first page", c, status, msg)
			}
		}
	})
}

// checkEvery checks that ids holds n different sessions, s-page-000 to
// s-page-(n-1), newest (highest number) first.
func checkEvery(t *testing.T, ids []string, n int) {
	t.Helper()
	if len(ids) != n {
		t.Fatalf("%d sessions, want %d", len(ids), n)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("%s listed twice", id)
		}
		seen[id] = true
	}
	for i := range n {
		if id := fmt.Sprintf("s-page-%03d", i); !seen[id] {
			t.Errorf("%s missing", id)
		}
	}
	// s-page-061 to 129 start a second apart (060 starts with the 60
	// before it): newest first.
	for i, id := range ids[:n-61] {
		if want := fmt.Sprintf("s-page-%03d", n-1-i); id != want {
			t.Fatalf("position %d is %s, want %s (newest first)", i, id, want)
		}
	}
}
