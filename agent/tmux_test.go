package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// TestInteractivePTYSession drives a real `ssh -tt` through tmux: the
// user types commands (multi-byte text among them) and resizes the window.
// The production-tier recording must hold output, input and the resize in
// the order they happened, and Debian's asciinema must replay the output
// with the multi-byte text intact.
func TestInteractivePTYSession(t *testing.T) {
	for _, tool := range []string{"tmux", "asciinema", "script"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install %s", tool, map[string]string{"tmux": "tmux", "asciinema": "asciinema", "script": "bsdutils"}[tool])
		}
	}
	ca := newFakeCA(t)
	a := startAgent(t, ca, agentOpts{tier: api.TierProduction, realUser: true})
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{tier: api.TierProduction, keyID: "alice@local tmux",
		principals: []string{login}, extensions: productionExt()})

	// The ssh command line, as a script tmux runs.
	script := filepath.Join(c.home, "ssh.sh")
	var q []string
	for _, arg := range c.args(k, login, "-tt", "-o", "SendEnv=LANG") {
		q = append(q, shellQuote(arg))
	}
	body := fmt.Sprintf("#!/bin/sh\nexport HOME=%s LANG=C.UTF-8\nunset SSH_AUTH_SOCK\nexec ssh %s\n", shellQuote(c.home), strings.Join(q, " "))
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	tm := newTmux(t)
	tm.run("new-session", "-d", "-s", "s", "-x", "100", "-y", "30", script)

	// The login shell is up once it ran something.
	tm.sendLine("echo ready-$((1+1))")
	tm.waitPane("ready-2")
	const text = "héllo wörld ✓ 日本"
	tm.sendLine(`echo "` + text + ` $((6*7))"`)
	tm.waitPane(text + " 42")
	tm.run("resize-window", "-t", "s", "-x", "120", "-y", "40")
	tm.sendLine("stty size")
	tm.waitPane("40 120")
	tm.sendLine("exit")
	tm.waitGone()

	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == "alice@local tmux" })
	if !m.Complete || !m.RecordInput || m.Kind != recorder.KindShell {
		t.Errorf("metadata = %+v, want a complete shell recording with input", m)
	}
	path := castPath(SpoolDir(a.dataDir), m.SessionID)
	hdr, evs := readCast(t, path)
	if hdr.Width != 100 || hdr.Height != 30 || hdr.Env["TERM"] == "" {
		t.Errorf("header = %+v, want 100x30 and TERM", hdr)
	}
	// In order: the shell's output, the typed command, its output, the
	// resize, then output at the new size.
	iReady := indexOf(evs, 0, func(e recorder.Event) bool { return e.Code == "o" && strings.Contains(e.Data, "ready-2") })
	iTyped := indexOf(evs, iReady+1, func(e recorder.Event) bool { return e.Code == "i" && strings.Contains(e.Data, "héllo") })
	iEcho := indexOf(evs, iTyped+1, func(e recorder.Event) bool { return e.Code == "o" && strings.Contains(e.Data, text+" 42") })
	iResize := indexOf(evs, iEcho+1, func(e recorder.Event) bool { return e.Code == "r" && e.Data == "120x40" })
	iSize := indexOf(evs, iResize+1, func(e recorder.Event) bool { return e.Code == "o" && strings.Contains(e.Data, "40 120") })
	if iReady < 0 || iTyped < 0 || iEcho < 0 || iResize < 0 || iSize < 0 {
		t.Fatalf("events out of order or missing (ready %d, i %d, echo %d, r %d, size %d):\n%s",
			iReady, iTyped, iEcho, iResize, iSize, eventsString(evs))
	}
	var typed strings.Builder
	for _, e := range evs {
		if e.Code == "i" {
			typed.WriteString(e.Data)
		}
	}
	if !strings.Contains(typed.String(), text) || !strings.Contains(typed.String(), "stty size") {
		t.Errorf("recorded input %q lacks what was typed", typed.String())
	}

	// Debian's asciinema replays it; it wants a terminal, script gives one.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-qec", "asciinema cat "+shellQuote(path), "/dev/null")
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("asciinema cat: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), text+" 42") || !strings.Contains(string(out), "40 120") {
		t.Errorf("asciinema cat output lacks the session's text:\n%s", out)
	}
}

func indexOf(evs []recorder.Event, from int, match func(recorder.Event) bool) int {
	if from < 0 {
		return -1
	}
	for i := from; i < len(evs); i++ {
		if match(evs[i]) {
			return i
		}
	}
	return -1
}

func eventsString(evs []recorder.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%.3f %s %q\n", e.Time, e.Code, e.Data)
	}
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tmux drives a private tmux server.
type tmux struct {
	t    *testing.T
	sock string
}

func newTmux(t *testing.T) *tmux {
	tm := &tmux{t: t, sock: filepath.Join(t.TempDir(), "tmux.sock")}
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", tm.sock, "kill-server").Run() })
	return tm
}

func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	out, err := tm.try(args...)
	if err != nil {
		tm.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return out
}

func (tm *tmux) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tmux", append([]string{"-S", tm.sock, "-f", "/dev/null"}, args...)...)
	cmd.Env = append(os.Environ(), "TERM=xterm-256color", "LANG=C.UTF-8")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (tm *tmux) sendLine(line string) {
	tm.t.Helper()
	tm.run("send-keys", "-t", "s", "-l", line)
	tm.run("send-keys", "-t", "s", "Enter")
}

func (tm *tmux) waitPane(want string) {
	tm.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var pane string
	for time.Now().Before(deadline) {
		pane, _ = tm.try("capture-pane", "-p", "-t", "s")
		if strings.Contains(pane, want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tm.t.Fatalf("tmux pane never showed %q:\n%s", want, pane)
}

func (tm *tmux) waitGone() {
	tm.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := tm.try("has-session", "-t", "s"); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tm.t.Fatal("the ssh session in tmux did not end")
}

// TestExecReplaysWithoutStaircase: `ssh host cmd` has no terminal, so its
// output carries bare LFs; a player of the cast used to draw each line
// where the previous one ended (a staircase). Replayed by asciinema's own
// CLI in a real terminal (tmux), every line of the recording starts at
// column 0, as the user saw it.
func TestExecReplaysWithoutStaircase(t *testing.T) {
	for _, tool := range []string{"tmux", "asciinema"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install %s (make test does this)", tool, tool)
		}
	}
	ca := newFakeCA(t)
	a := startAgent(t, ca, agentOpts{})
	login := currentUser(t)
	k := ca.issue(t, "", certSpec{keyID: "case staircase", principals: []string{login}, extensions: stagingExt()})
	out, _, err := goSSHRun(t, ca, a, k, login, `printf 'first line\nsecond line\nthird line\n'`)
	if err != nil || out != "first line\nsecond line\nthird line\n" {
		t.Fatalf("exec: %v %q", err, out)
	}
	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == "case staircase" && m.Finished })
	cast := castPath(SpoolDir(a.dataDir), m.SessionID)

	tm := newTmux(t)
	tm.run("new-session", "-d", "-s", "s", "-x", "80", "-y", "10", "asciinema cat "+shellQuote(cast)+"; sleep 60")
	tm.waitPane("third line")
	pane := tm.run("capture-pane", "-p", "-t", "s")
	var lines []string
	for _, l := range strings.Split(pane, "\n") {
		if l = strings.TrimRight(l, " "); l != "" {
			lines = append(lines, l)
		}
	}
	if strings.Join(lines, "|") != "first line|second line|third line" {
		t.Errorf("the replay draws\n%s\nwant each line at column 0", pane)
	}
}
