package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// TestEchoOffSeenFromMaster: the agent reads the terminal's modes through
// its end (the master) of a real pty, as a program sets them on its end:
// echo off in canonical mode hides input; raw mode (readline, editors) and
// echo on do not.
func TestEchoOffSeenFromMaster(t *testing.T) {
	st, err := openPTY(&ptyRequest{Term: "xterm", Cols: 80, Rows: 24})
	if err != nil {
		t.Fatal(err)
	}
	defer st.closeAll()
	set := func(on, off uint32) {
		tio, err := unix.IoctlGetTermios(int(st.tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		tio.Lflag = tio.Lflag&^off | on
		if err := unix.IoctlSetTermios(int(st.tty.Fd()), unix.TCSETS, tio); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name    string
		on, off uint32
		hidden  bool
	}{
		{"cooked, echo (a shell reading a line)", unix.ECHO | unix.ICANON, 0, false},
		{"echo off (read -s, sudo, getpass)", unix.ICANON, unix.ECHO, true},
		{"raw (readline, vim)", 0, unix.ECHO | unix.ICANON, false},
		{"echo back on", unix.ECHO | unix.ICANON, 0, false},
	}
	for _, tc := range cases {
		set(tc.on, tc.off)
		if got := st.echoOff(); got != tc.hidden {
			t.Errorf("%s: echoOff = %v, want %v", tc.name, got, tc.hidden)
		}
	}
}

// randomSecret is a marker no file holds by chance.
func randomSecret(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// filesHolding returns the files under dir that hold any of secrets (raw
// bytes, as grep -r would find them).
func filesHolding(t testing.TB, dir string, secrets ...string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				hits = append(hits, path+" holds "+s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// terminal is an interactive `ssh -tt` driven by the test: it types on
// ssh's stdin and reads what the user would see.
type terminal struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan struct{}
	err   error
}

func (c *sshClient) terminal(t *testing.T, k *userKey, login, remote string) *terminal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, "ssh", append(c.args(k, login, "-tt"), remote)...)
	cmd.Env = c.env()
	tm := &terminal{t: t, cmd: cmd, done: make(chan struct{})}
	var err error
	if tm.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = tm
	cmd.Stderr = tm
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		tm.err = cmd.Wait()
		close(tm.done)
	}()
	return tm
}

func (tm *terminal) Write(p []byte) (int, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.Write(p)
}

func (tm *terminal) String() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.String()
}

// waitFor waits (bounded) until the user has seen want.
func (tm *terminal) waitFor(want string) {
	tm.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(tm.String(), want) {
		select {
		case <-tm.done:
			if strings.Contains(tm.String(), want) {
				return
			}
			tm.t.Fatalf("ssh ended (%v) before %q appeared:\n%s", tm.err, want, tm.String())
		default:
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("%q did not appear:\n%s", want, tm.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (tm *terminal) typeText(s string) {
	tm.t.Helper()
	if _, err := io.WriteString(tm.stdin, s); err != nil {
		tm.t.Fatal(err)
	}
}

func (tm *terminal) wait() error {
	select {
	case <-tm.done:
	case <-time.After(30 * time.Second):
		tm.t.Fatalf("ssh did not end:\n%s", tm.String())
	}
	return tm.err
}

// echoWatch prints ECHOOFF-N once the session's terminal stops echoing: the
// test types a password only then, as a person would after the prompt (a
// password typed ahead, while the terminal still echoes, is shown on the
// screen and recorded like any other input).
const echoWatch = `w() { i=0; while [ $i -lt 2000 ]; do if stty -a </dev/tty | grep -qE '(^| )-echo( |;|$)'; then echo "ECHOOFF-$1"; return; fi; i=$((i+1)); sleep 0.01; done; }; `

// TestHiddenInputNeverRecorded: in a production session (which records
// input), passwords typed at `read -s`, at `stty -echo; read` and at
// Python's getpass reach the program but no file of the agent (spool cast,
// metadata, status, caches) and no log line; the recording has a marker
// with each one's byte count instead, and input typed with echo on is
// still recorded. (sudo is not installed on the test machines: read -s,
// stty and getpass(3)'s Python twin turn echo off the same way.)
func TestHiddenInputNeverRecorded(t *testing.T) {
	ca := newFakeCA(t)
	a := startAgent(t, ca, agentOpts{tier: api.TierProduction, realUser: true})
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{tier: api.TierProduction, keyID: "alice@local hidden input",
		principals: []string{login}, extensions: productionExt()})
	pw := []string{randomSecret(t, "pw1-"), randomSecret(t, "pw2-"), randomSecret(t, "pw3-")}
	visible := randomSecret(t, "visible-")

	script := echoWatch +
		`w 1 & read -s -p 'PW1:' a; wait; echo; echo "GOT1-${#a}"; ` +
		`w 2 & stty -echo; read b; stty echo; wait; echo "GOT2-${#b}"; ` +
		`w 3 & python3 -c 'import getpass; p = getpass.getpass("PW3:"); print("GOT3-%d" % len(p))'; wait; ` +
		`echo READY4; read c; echo "GOT4-$c"`
	tm := c.terminal(t, k, login, script)
	for i, p := range pw {
		n := strconv.Itoa(i + 1)
		tm.waitFor("ECHOOFF-" + n)
		tm.typeText(p + "\r")
		tm.waitFor("GOT" + n + "-" + strconv.Itoa(len(p)))
	}
	tm.waitFor("READY4")
	tm.typeText(visible + "\r")
	tm.waitFor("GOT4-" + visible)
	if err := tm.wait(); err != nil {
		t.Fatalf("session: %v\n%s", err, tm.String())
	}
	if seen := tm.String(); strings.Contains(seen, pw[0]) {
		t.Fatalf("the terminal echoed a password: the test typed too early\n%s", seen)
	}

	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == k.cert.KeyId })
	if hits := filesHolding(t, a.dataDir, pw...); len(hits) > 0 {
		t.Errorf("a password reached the agent's data directory:\n%s", strings.Join(hits, "\n"))
	}
	if logs := a.logs.String(); strings.Contains(logs, pw[0]) || strings.Contains(logs, pw[1]) || strings.Contains(logs, pw[2]) {
		t.Errorf("a password reached the agent's log")
	}
	_, evs := readCast(t, castPath(SpoolDir(a.dataDir), m.SessionID))
	var markers []string
	var typed strings.Builder
	for _, e := range evs {
		switch e.Code {
		case recorder.CodeMarker:
			if strings.HasPrefix(e.Data, "hidden input:") {
				markers = append(markers, e.Data)
			}
		case recorder.CodeInput:
			typed.WriteString(e.Data)
		}
	}
	var want []string
	for _, p := range pw {
		want = append(want, hiddenInputMarker(len(p)+1)) // with its Enter
	}
	if strings.Join(markers, "\n") != strings.Join(want, "\n") {
		t.Errorf("hidden-input markers:\n%s\nwant:\n%s\nevents:\n%s", strings.Join(markers, "\n"), strings.Join(want, "\n"), eventsString(evs))
	}
	if !strings.Contains(typed.String(), visible) {
		t.Errorf("input typed with echo on is not recorded: %q", typed.String())
	}
}

// testKeyFile is a file holding secrets the redaction patterns know: a PEM
// private key block (ssh-keygen -t ed25519 -N ” -f k; only its shape
// matters here, the body is random) and an AWS access key id.
func testKeyFile(t *testing.T) (path string, secrets []string) {
	t.Helper()
	body := make([]byte, 180)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	b64 := []byte(strings.NewReplacer("+", "A", "/", "B").Replace(
		strings.TrimRight(string(regexp.MustCompile(`.{1,70}`).ReplaceAllStringFunc(hexB64(body), func(s string) string { return s + "\n" })), "\n")))
	akia := "AKIA" + strings.ToUpper(hex.EncodeToString(body[:8]))
	content := "config for the test\n-----BEGIN OPENSSH PRIVATE KEY-----\n" + string(b64) +
		"\n-----END OPENSSH PRIVATE KEY-----\naws_access_key_id = " + akia + "\nend of file\n"
	path = filepath.Join(t.TempDir(), "secrets.txt")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(path), 0o755)
	firstLine := strings.SplitN(string(b64), "\n", 2)[0]
	return path, []string{firstLine, akia}
}

func hexB64(b []byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(alphabet[c&63])
		s.WriteByte(alphabet[c>>2&63])
	}
	return s.String()
}

// TestRedactedOutputNeverRecorded: a production session that prints a
// private key block and an AWS key (cat, with and without a terminal)
// shows them to the user, but neither reaches any file of the agent; the
// recording says [REDACTED:private-key] and [REDACTED:aws-access-key].
func TestRedactedOutputNeverRecorded(t *testing.T) {
	ca := newFakeCA(t)
	a := startAgent(t, ca, agentOpts{tier: api.TierProduction, realUser: true})
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	path, secrets := testKeyFile(t)
	for _, mode := range []struct {
		name  string
		extra []string
	}{{"exec", nil}, {"pty", []string{"-tt"}}} {
		t.Run(mode.name, func(t *testing.T) {
			k := ca.issue(t, c.home, certSpec{tier: api.TierProduction, keyID: "alice@local redact " + mode.name,
				principals: []string{login}, extensions: productionExt()})
			out, errOut, err := c.run(k, login, mode.extra, "cat "+path)
			if err != nil || !strings.Contains(out, secrets[0]) || !strings.Contains(out, secrets[1]) {
				t.Fatalf("the user does not see their file: %v %q %q", err, out, errOut)
			}
			m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == k.cert.KeyId })
			if hits := filesHolding(t, a.dataDir, secrets...); len(hits) > 0 {
				t.Fatalf("a secret reached the agent's data directory:\n%s", strings.Join(hits, "\n"))
			}
			_, evs := readCast(t, castPath(SpoolDir(a.dataDir), m.SessionID))
			got := output(evs)
			for _, want := range []string{"config for the test", "[REDACTED:private-key]", "aws_access_key_id = [REDACTED:aws-access-key]", "end of file"} {
				if !strings.Contains(got, want) {
					t.Errorf("recorded output lacks %q:\n%s", want, got)
				}
			}
		})
	}
}

// TestClosedTierShowsOnlyRecordedOutput: the spool is a real 2 MiB tmpfs
// that fills while a production session prints numbered lines as fast as
// it can. Every line the user received is in the recording (the agent
// sends output only once the recorder accepted it), and the session ends
// with the recording-failure message.
func TestClosedTierShowsOnlyRecordedOutput(t *testing.T) {
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs (a real full disk)")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount -t tmpfs refused here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	ca := newFakeCA(t)
	a := startAgent(t, ca, agentOpts{tier: api.TierProduction, dataDir: filepath.Join(dir, "data")})
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{tier: api.TierProduction, keyID: "alice@local fills the disk",
		principals: []string{login}, extensions: productionExt()})

	// One write per line (a shell loop, not seq): small reads that the
	// recorder would buffer for up to a second without acknowledgement.
	out, errOut, err := c.run(k, login, nil, `i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); echo $i; done`)
	if err == nil {
		t.Fatalf("the session outlived a full spool (%d bytes of output)", len(out))
	}
	if !strings.Contains(errOut, "cannot record sessions right now") {
		t.Errorf("stderr lacks the recording-failure message: %q", errOut)
	}
	received := strings.Split(out, "\n")
	received = received[:len(received)-1] // the last one may be cut short
	if len(received) < 1000 {
		t.Fatalf("only %d lines arrived before the end: the disk should hold far more", len(received))
	}

	// The session is over once ssh returned: its cast is final.
	casts, _ := filepath.Glob(filepath.Join(SpoolDir(a.dataDir), "*.cast"))
	if len(casts) != 1 {
		t.Fatalf("casts: %v", casts)
	}
	_, evs := readCast(t, casts[0])
	recorded := strings.Split(string(recorder.ExactOutput(recorder.Metadata{OutputNewlines: recorder.NewlinesCRLF}, []byte(output(evs)))), "\n") // no terminal: undo the recorded CR LF
	for i, l := range received {
		if i >= len(recorded) || recorded[i] != l {
			t.Fatalf("line %d the user received (%q) is not in the recording (which has %d lines)", i+1, l, len(recorded)-1)
		}
	}
	t.Logf("received %d lines, recorded %d", len(received), len(recorded)-1)
	a.logs.find(t, map[string]string{"msg": "audit", "action": AuditRecordingFailed, "key_id": k.cert.KeyId})
}

// TestConfiguredRedaction: patterns from the agent's configuration
// (sshward-agent --redact NAME=REGEXP) are applied with the defaults, to
// output and to the command line (metadata, start marker, audit, log); a
// pattern without a literal start is refused at start.
func TestConfiguredRedaction(t *testing.T) {
	ca := newFakeCA(t)
	a := startAgent(t, ca, agentOpts{tier: api.TierProduction, cfg: func(c *Config) {
		c.Redact = []recorder.RedactPattern{{Name: "vault-token", Regexp: `hvs\.[A-Za-z0-9]{24,}`}}
	}})
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{tier: api.TierProduction, keyID: "alice@local vault",
		principals: []string{login}, extensions: productionExt()})
	token := "hvs." + randomSecret(t, "")
	out, _, err := c.run(k, login, nil, "echo VAULT_TOKEN="+token+" AKIAIOSFODNN7EXAMPLE")
	if err != nil || !strings.Contains(out, token) {
		t.Fatalf("session: %v %q", err, out)
	}
	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == k.cert.KeyId })
	if hits := filesHolding(t, a.dataDir, token[4:]); len(hits) > 0 {
		t.Fatalf("the token reached the agent's data directory:\n%s", strings.Join(hits, "\n"))
	}
	if strings.Contains(a.logs.String(), token[4:]) {
		t.Errorf("the token (in the command line) reached the agent's log")
	}
	_, evs := readCast(t, castPath(SpoolDir(a.dataDir), m.SessionID))
	if got, want := output(evs), "VAULT_TOKEN=[REDACTED:vault-token] [REDACTED:aws-access-key]"; !strings.Contains(got, want) {
		t.Errorf("recorded output %q lacks %q", got, want)
	}
	if want := "echo VAULT_TOKEN=[REDACTED:vault-token] [REDACTED:aws-access-key]"; m.Command != want {
		t.Errorf("recorded command %q, want %q", m.Command, want)
	}

	cfg := Config{Tier: "production", DataDir: t.TempDir(), CA: ca,
		Redact: []recorder.RedactPattern{{Name: "any-case", Regexp: `(?i)secret=\S+`}}}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "must begin with literal text") {
		t.Errorf("New with a pattern without a literal start: %v", err)
	}
}

// TestClosedTierKill9ShowsOnlyRecordedOutput: kill -9 of a production
// agent while a session prints numbered lines fast. Every line the user
// received is in the cast file the dead agent left (before, up to a second
// of output reached the user but not the file).
func TestClosedTierKill9ShowsOnlyRecordedOutput(t *testing.T) {
	ca := newFakeCA(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	startAgent(t, ca, agentOpts{tier: api.TierProduction, dataDir: dataDir}).stop() // join once, in process
	child := startChild(t, dataDir, t.TempDir(), "SSHWARD_CHILD_TIER="+api.TierProduction)
	_, port, _ := net.SplitHostPort(child.addr)
	c := newSSHClient(t, ca, &testAgent{port: port})
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{tier: api.TierProduction, keyID: "alice@local kill9 closed",
		principals: []string{login}, extensions: productionExt()})
	lines, wait := c.stream(t, k, login, `i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); echo $i; done`)
	var received []string
	for l := range lines {
		received = append(received, l)
		if len(received) == 20000 {
			if err := child.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = child.cmd.Wait()
	if _, err := wait(); err == nil {
		t.Error("ssh did not notice the agent's death")
	}
	received = received[:len(received)-1] // the last line may be cut short

	casts, _ := filepath.Glob(filepath.Join(SpoolDir(dataDir), "*.cast"))
	if len(casts) != 1 {
		t.Fatalf("casts: %v", casts)
	}
	data, err := os.ReadFile(casts[0])
	if err != nil {
		t.Fatal(err)
	}
	// What the next start keeps: up to the last whole line (the repair).
	whole := filepath.Join(t.TempDir(), "whole.cast")
	if err := os.WriteFile(whole, data[:bytes.LastIndexByte(data, '\n')+1], 0o600); err != nil {
		t.Fatal(err)
	}
	_, evs := readCast(t, whole)
	recorded := strings.Split(string(recorder.ExactOutput(recorder.Metadata{OutputNewlines: recorder.NewlinesCRLF}, []byte(output(evs)))), "\n") // no terminal: undo the recorded CR LF
	for i, l := range received {
		if i >= len(recorded)-1 || recorded[i] != l {
			t.Fatalf("line %d the user received (%q) is not in the recording the killed agent left (%d lines)", i+1, l, len(recorded)-1)
		}
	}
	t.Logf("received %d lines, recorded %d", len(received), len(recorded)-1)
}

// eventLog is a Recording that keeps what it is given, for unit tests.
type eventLog struct {
	mu     sync.Mutex
	events []string
	fail   error // returned by every write once set
}

func (l *eventLog) add(e string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return l.fail
	}
	l.events = append(l.events, e)
	return nil
}
func (l *eventLog) Output(p []byte) error     { return l.add("o " + string(p)) }
func (l *eventLog) Input(p []byte) error      { return l.add("i " + string(p)) }
func (l *eventLog) Resize(c, r int) error     { return l.add("r") }
func (l *eventLog) Marker(label string) error { return l.add("m " + label) }
func (l *eventLog) Commit() error             { return l.add("commit") }
func (l *eventLog) Err() error                { return nil }
func (l *eventLog) Close(context.Context, recorder.EndInfo) (*recorder.Metadata, error) {
	return nil, nil
}

// TestInputRecorder: hidden chunks are counted, not recorded, and become
// one marker at the Enter, when echo returns, or at the session's end; a
// closed tier withholds input whose marker could not be recorded.
func TestInputRecorder(t *testing.T) {
	type chunk struct {
		hidden bool
		data   string
	}
	cases := []struct {
		name   string
		chunks []chunk
		end    bool // flush at the session's end
		want   []string
	}{
		{"visible", []chunk{{false, "ls\r"}}, false, []string{"i ls\r"}},
		{"password and Enter", []chunk{{true, "s3"}, {true, "cret"}, {true, "\r"}}, false,
			[]string{"m " + hiddenInputMarker(7)}},
		{"echo returns before an Enter", []chunk{{true, "abc"}, {false, "x"}}, false,
			[]string{"m " + hiddenInputMarker(3), "i x"}},
		{"two lines", []chunk{{true, "pw1\r"}, {true, "pw22\r"}}, false,
			[]string{"m " + hiddenInputMarker(4), "m " + hiddenInputMarker(5)}},
		{"session ends mid-password", []chunk{{true, "half"}}, true,
			[]string{"m " + hiddenInputMarker(4)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := &eventLog{}
			hidden := false
			ir := &inputRecorder{rec: &sessionRecording{rec: log, mode: FailClosed}, hidden: func() bool { return hidden }}
			for _, c := range tc.chunks {
				hidden = c.hidden
				if !ir.record([]byte(c.data)) {
					t.Fatalf("chunk %q withheld", c.data)
				}
			}
			if tc.end {
				ir.flush()
			}
			if strings.Join(log.events, "|") != strings.Join(tc.want, "|") {
				t.Errorf("events %q, want %q", log.events, tc.want)
			}
		})
	}
	t.Run("closed tier, marker fails", func(t *testing.T) {
		log := &eventLog{}
		failed := 0
		ir := &inputRecorder{rec: &sessionRecording{rec: log, mode: FailClosed, onFail: func(error, bool) { failed++ }},
			hidden: func() bool { return true }}
		log.fail = errors.New("disk full")
		if ir.record([]byte("secret\r")) || failed != 1 {
			t.Errorf("input passed (or no failure reported: %d) though its marker was not recorded", failed)
		}
	})
}
