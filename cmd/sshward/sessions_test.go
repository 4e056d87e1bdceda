package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/playback/web/webtest"
	"github.com/sshward/sshward/recorder"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sshward runs the CLI in process with home as $SSHWARD_HOME and returns
// stdout, stderr and the exit status.
func sshward(t *testing.T, home string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb syncBuffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, now: time.Now,
		getenv: func(k string) string {
			if k == "SSHWARD_HOME" {
				return home
			}
			return ""
		}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code = cli.Exit("sshward", run(ctx, args, e), &errb)
	return out.String(), errb.String(), code
}

// playbackWorld is a CA, a playback server with two finished recordings
// (one break-glass that printed "zanzibar"), and homes for an auditor and
// an engineer, shared by the CLI tests.
type playbackWorld struct {
	st                *webtest.Stack
	auditor, engineer string
}

func newPlaybackWorld(t *testing.T) *playbackWorld {
	t.Helper()
	st := webtest.New(t)
	st.Record(t, webtest.Session{ID: "s-quiet", User: "carol", Tier: "staging", Steps: []webtest.Step{
		{After: 100 * time.Millisecond, Output: "$ "},
		{After: time.Second, Output: "uptime\r\n up 3 days\r\n$ "},
	}})
	st.Record(t, webtest.Session{ID: "s-word", User: "alice", Tier: "break-glass", RequestID: "REQ-42",
		Reason: "INC-4711", Approvers: []string{"bob", "dave"}, Steps: []webtest.Step{
			{After: 100 * time.Millisecond, Output: "root@web1:~# "},
			{After: time.Second, Input: "cat /etc/motd\r"},
			{After: 100 * time.Millisecond, Output: "cat /etc/motd\r\n"},
			// An hour of nothing: --idle-limit must cut it.
			{After: time.Hour, Output: "welcome to \x1b[1mzanzibar\x1b[0m\r\nroot@web1:~# "},
			{After: 2 * time.Second, Output: "exit\r\n"},
		}})
	st.WaitSearch(t, "s-word", "zanzibar")
	return &playbackWorld{st: st, auditor: st.Home(t, webtest.Auditor), engineer: st.Home(t, webtest.Engineer)}
}

// TestPlaybackCommands runs sessions, export and play against one real CA
// and playback server (starting them costs seconds under -race).
func TestPlaybackCommands(t *testing.T) {
	w := newPlaybackWorld(t)
	t.Run("sessions", func(t *testing.T) { testSessions(t, w) })
	t.Run("export", func(t *testing.T) { testExport(t, w) })
	t.Run("play", func(t *testing.T) { testPlay(t, w) })
	t.Run("commands", func(t *testing.T) { testCommands(t, w) }) // commands_test.go
	t.Run("tampered", func(t *testing.T) { testTampered(t, w) })
}

// testTampered edits one byte of a stored recording and puts its
// modification time back (`touch -r`): sessions marks it, play and export
// refuse with one sentence, and --allow-tampered gets the edited bytes with
// a warning.
func testTampered(t *testing.T, w *playbackWorld) {
	w.st.Record(t, webtest.Session{ID: "s-edit", User: "mallory", Tier: "production", Steps: []webtest.Step{
		{After: 100 * time.Millisecond, Output: "$ "},
		{After: time.Second, Output: "rm -rf /srv/evidence\r\n$ "},
	}})
	w.st.WaitSearch(t, "s-edit", "evidence")
	f, err := w.st.Store.OpenCast("s-edit")
	if err != nil {
		t.Fatal(err)
	}
	name := f.(*os.File).Name() // stored in plaintext here
	f.Close()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(data, []byte("rm -rf"), []byte("ls -la"), 1)
	if bytes.Equal(edited, data) {
		t.Fatal("nothing to edit")
	}
	if err := os.WriteFile(name, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(name, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}

	out, stderr, code := sshward(t, w.auditor, "sessions", "--json")
	var list []sessionSummary
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("sessions --json: exit %d %s %s", code, out, stderr)
	}
	for _, s := range list {
		want := "verified"
		if s.ID == "s-edit" {
			want = "failed"
		}
		if s.Integrity != want {
			t.Errorf("sessions --json: %s integrity %q, want %q", s.ID, s.Integrity, want)
		}
		// The uploading host and each provenance check travel with it.
		checks := map[string]string{}
		for _, c := range s.Provenance {
			checks[c.Name] = c.Status
		}
		if s.UploadedBy != "web1.prod" || checks["host"] != "ok" || checks["user_cert"] != "ok" {
			t.Errorf("sessions --json: %s uploaded_by %q provenance %v", s.ID, s.UploadedBy, s.Provenance)
		}
	}
	out, _, _ = sshward(t, w.auditor, "sessions")
	if !regexp.MustCompile(`\bOK\n`).MatchString(out) || !regexp.MustCompile(`s-edit .* NO\n  ! FAILED integrity check`).MatchString(out) ||
		!regexp.MustCompile(`s-word .* ok\n`).MatchString(out) {
		t.Errorf("sessions table does not mark the edited recording:\n%s", out)
	}
	for _, verb := range []string{"play", "export"} {
		out, stderr, code := sshward(t, w.auditor, verb, "s-edit")
		if code != 1 || out != "" || !strings.Contains(stderr, "fails its integrity check") || !strings.Contains(stderr, "--allow-tampered") {
			t.Errorf("%s of an edited recording: exit %d, %d bytes out, stderr %q", verb, code, len(out), stderr)
		}
	}
	out, stderr, code = sshward(t, w.auditor, "export", "s-edit", "--allow-tampered")
	if code != 0 || out != string(edited) || !strings.Contains(stderr, "WARNING") {
		t.Errorf("export --allow-tampered: exit %d, same bytes %v, stderr %q", code, out == string(edited), stderr)
	}
}

func testSessions(t *testing.T, w *playbackWorld) {

	t.Run("table fits 80 columns", func(t *testing.T) {
		out, stderr, code := sshward(t, w.auditor, "sessions")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") {
			t.Fatalf("want a header and two rows:\n%s", out)
		}
		for _, l := range lines {
			if n := len([]rune(l)); n > 80 {
				t.Errorf("line of %d columns: %q", n, l)
			}
		}
		for _, want := range []string{"s-word", "s-quiet", "alice", "carol", "break-glass", "staging", "web1.prod"} {
			if !strings.Contains(out, want) {
				t.Errorf("table lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("grep shows where the word is", func(t *testing.T) {
		out, stderr, code := sshward(t, w.auditor, "sessions", "--grep", "zanzibar")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if strings.Contains(out, "s-quiet") || !strings.Contains(out, "s-word") {
			t.Fatalf("grep listed the wrong sessions:\n%s", out)
		}
		// 1.2 s + an hour: the hit's offset, then its text without the
		// escape sequences the session printed.
		if !strings.Contains(out, "1:00:01") || !strings.Contains(out, "welcome to zanzibar") || strings.Contains(out, "\x1b") {
			t.Errorf("hit line missing or raw:\n%q", out)
		}
	})

	tests := []struct {
		name string
		args []string
		want []string // ids, in order
	}{
		{"all", nil, []string{"s-word", "s-quiet"}},
		{"user", []string{"--user", "carol"}, []string{"s-quiet"}},
		{"tier", []string{"--tier", "break-glass"}, []string{"s-word"}},
		{"break-glass", []string{"--break-glass"}, []string{"s-word"}},
		{"live", []string{"--live"}, []string{}},
		{"host", []string{"--host", "web1.prod"}, []string{"s-word", "s-quiet"}},
		{"grep", []string{"--grep", "zanzibar"}, []string{"s-word"}},
		{"since a time before", []string{"--since", "2026-11-21T08:00:00Z"}, []string{"s-word", "s-quiet"}},
		{"since a time after", []string{"--since", "2026-11-23T00:00:00Z"}, []string{}},
		{"explicit --playback", []string{"--playback", w.st.URL, "--tier", "staging"}, []string{"s-quiet"}},
		{"limit", []string{"--limit", "1"}, []string{"s-word"}},
	}
	for _, tt := range tests {
		t.Run("json "+tt.name, func(t *testing.T) {
			out, stderr, code := sshward(t, w.auditor, append([]string{"sessions", "--json"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var list []map[string]any
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatalf("not a JSON list: %v\n%s", err, out)
			}
			ids := []string{}
			for _, s := range list {
				ids = append(ids, s["id"].(string))
				for _, k := range []string{"id", "user", "host", "tier", "start", "live", "break_glass", "integrity", "bytes"} {
					if _, ok := s[k]; !ok {
						t.Errorf("session %v lacks %q", s["id"], k)
					}
				}
			}
			if strings.Join(ids, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("ids %v, want %v", ids, tt.want)
			}
			if len(list) > 0 && list[0]["id"] == "s-word" {
				s := list[0]
				if s["user"] != "alice" || s["tier"] != "break-glass" || s["break_glass"] != true || s["live"] != false ||
					s["request_id"] != "REQ-42" || s["integrity"] != "verified" {
					t.Errorf("s-word = %v", s)
				}
			}
		})
	}

	refusals := []struct {
		name, home string
		args       []string
		code       int
		want       string
	}{
		{"engineer", w.engineer, []string{"sessions"}, 1, "only auditors"},
		{"engineer plays", w.engineer, []string{"play", "s-word"}, 1, "only auditors"},
		{"engineer exports", w.engineer, []string{"export", "s-word"}, 1, "only auditors"},
		{"unknown session", w.auditor, []string{"play", "nope"}, 1, "no such session"},
		{"bad since", w.auditor, []string{"sessions", "--since", "yesterday"}, 2, "--since"},
		{"positional filter", w.auditor, []string{"sessions", "alice"}, 2, "--user alice"},
		{"play without id", w.auditor, []string{"play"}, 2, "session ID is required"},
		{"bad id", w.auditor, []string{"export", "../etc"}, 2, "not a session ID"},
		{"bad speed", w.auditor, []string{"play", "s-word", "--speed", "0"}, 2, "--speed"},
		{"http playback", w.auditor, []string{"sessions", "--playback", "http://127.0.0.1:1"}, 2, "https"},
		{"not logged in", t.TempDir(), []string{"sessions"}, 1, "sshward login"},
	}
	for _, tt := range refusals {
		t.Run("refused "+tt.name, func(t *testing.T) {
			out, stderr, code := sshward(t, tt.home, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tt.code, tt.want)
			}
			if out != "" {
				t.Errorf("stdout %q", out)
			}
		})
	}
}

func testExport(t *testing.T, w *playbackWorld) {
	out, stderr, code := sshward(t, w.auditor, "export", "s-word")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// Byte for byte what the server stored (and verified).
	req, _ := http.NewRequest(http.MethodGet, w.st.URL+"/api/sessions/s-word/cast", nil)
	req.Header.Set("Authorization", "Bearer "+w.st.AuditorToken)
	resp, err := w.st.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if out != string(stored) {
		t.Fatalf("export differs from the stored cast (%d vs %d bytes)", len(out), len(stored))
	}
	rd, err := recorder.NewReader(strings.NewReader(out))
	if err != nil || rd.Header().Version != 2 {
		t.Fatalf("export is not asciicast v2: %v", err)
	}

	// Debian's asciinema 2.2 accepts it: `asciinema cat` needs a TTY, which
	// script(1) provides (NOTES.md).
	for _, bin := range []string{"asciinema", "script"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is missing: install the asciinema and bsdutils packages", bin)
		}
	}
	path := filepath.Join(t.TempDir(), "session.cast")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("script", "-qec", "asciinema cat "+path, "/dev/null")
	cmd.Stdin = nil // /dev/null
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("asciinema cat: %v\n%s", err, got)
	}
	if want := "welcome to \x1b[1mzanzibar\x1b[0m\r\nroot@web1:~# "; !strings.Contains(string(got), want) {
		t.Fatalf("asciinema cat printed %q, want it to contain %q", got, want)
	}
}

// castOutput is the concatenated output events of a cast.
func castOutput(t *testing.T, cast []byte) string {
	t.Helper()
	rd, err := recorder.NewReader(bytes.NewReader(cast))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return b.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Code == recorder.CodeOutput {
			b.WriteString(e.Data)
		}
	}
}

func testPlay(t *testing.T, w *playbackWorld) {
	cast, _, code := sshward(t, w.auditor, "export", "s-word")
	if code != 0 {
		t.Fatal("export failed")
	}
	want := castOutput(t, []byte(cast))

	t.Run("without a terminal prints the output stream", func(t *testing.T) {
		// The recording holds an hour of silence: only --idle-limit (or
		// --speed) lets this finish within the test's minute.
		for _, args := range [][]string{{"--idle-limit", "0.2"}, {"--speed", "100000"}} {
			out, stderr, code := sshward(t, w.auditor, append([]string{"play", "s-word"}, args...)...)
			if code != 0 {
				t.Fatalf("%v: exit %d: %s", args, code, stderr)
			}
			if out != want {
				t.Fatalf("%v: printed %q, want the output events %q", args, out, want)
			}
		}
	})

	t.Run("follows a live session until it ends", func(t *testing.T) {
		live := w.st.StartLive(t, webtest.Session{ID: "s-live", Steps: []webtest.Step{{After: 100 * time.Millisecond, Output: "live shell\r\n"}}})
		var out syncBuffer
		var errb bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, now: time.Now,
			getenv: func(k string) string { return map[string]string{"SSHWARD_HOME": w.auditor}[k] }}
		done := make(chan error, 1)
		go func() { done <- run(context.Background(), []string{"play", "s-live", "--idle-limit", "0.2"}, e) }()
		waitUntil(t, "the live output", func() bool { return strings.Contains(out.String(), "live shell") })
		live.Add(t, webtest.Step{After: time.Second, Output: "okapi sighted\r\n"})
		waitUntil(t, "output added while playing", func() bool { return strings.Contains(out.String(), "okapi sighted") })
		live.Finish(t)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("play: %v (%s)", err, errb.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("play did not end when the session did")
		}
		if out.String() != "live shell\r\nokapi sighted\r\n" {
			t.Errorf("printed %q", out.String())
		}
	})

	t.Run("in a terminal: raw mode, keys, restored", func(t *testing.T) {
		ptm, tty, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer ptm.Close()
		defer tty.Close()
		before, err := term.GetState(int(tty.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		var screen syncBuffer
		go io.Copy(&screen, ptm)
		var errb bytes.Buffer
		e := &env{stdin: tty, stdout: tty, stderr: &errb, now: time.Now,
			getenv: func(k string) string { return map[string]string{"SSHWARD_HOME": w.auditor}[k] }}
		done := make(chan error, 1)
		// At real speed the hour of silence comes after "cat /etc/motd":
		// → skips 5 s at a time, so only q ends this in time.
		go func() { done <- run(context.Background(), []string{"play", "s-word"}, e) }()
		waitUntil(t, "the first output", func() bool { return strings.Contains(screen.String(), "cat /etc/motd") })
		if raw, _ := term.GetState(int(tty.Fd())); raw == nil || *raw == *before {
			t.Error("the terminal is not in raw mode while playing")
		}
		ptm.Write([]byte("q"))
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("play: %v (%s)", err, errb.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("q did not quit")
		}
		if after, _ := term.GetState(int(tty.Fd())); after == nil || *after != *before {
			t.Error("the terminal mode was not restored")
		}
		if s := screen.String(); !strings.HasPrefix(s, resetScreen) || strings.Contains(s, "zanzibar") {
			t.Errorf("screen %q: want a cleared screen and nothing past the idle hour", s)
		}
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
