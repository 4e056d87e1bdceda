package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// fastAgent is an agent whose test account runs /bin/sh in a temporary home.
func fastAgent(t *testing.T, ca *fakeCA, tier string) (*testAgent, string) {
	t.Helper()
	home := t.TempDir()
	a := startAgent(t, ca, agentOpts{tier: tier, cfg: func(c *Config) { c.LookupUser = testUserLookup(t, home) }})
	return a, home
}

func TestForceCommand(t *testing.T) {
	ca := newFakeCA(t)
	a, _ := fastAgent(t, ca, api.TierStaging)
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{keyID: "case force", principals: []string{login},
		options: map[string]string{optForceCommand: `echo "forced [$SSH_ORIGINAL_COMMAND]"`}, extensions: stagingExt()})
	for _, tt := range []struct{ remote, want string }{
		{"echo asked", "forced [echo asked]\n"},
		{"", "forced []\n"}, // a shell request runs the forced command too
	} {
		out, errOut, err := c.runEnv(k, login, nil, []string{"-T"}, tt.remote)
		if err != nil || out != tt.want {
			t.Errorf("ssh %q = %q (%v %q), want %q", tt.remote, out, err, errOut, tt.want)
		}
	}
	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == "case force" })
	if !strings.HasPrefix(m.Command, "echo \"forced") {
		t.Errorf("recorded command %q, want the forced one", m.Command)
	}
}

// TestUserRC runs ~/.ssh/rc only with permit-user-rc.
func TestUserRC(t *testing.T) {
	ca := newFakeCA(t)
	a, home := fastAgent(t, ca, api.TierStaging)
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	rc := "echo rc-ran >> \"$HOME/rc-runs\"\necho rc-output\n"
	if err := os.WriteFile(filepath.Join(home, ".ssh", "rc"), []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		permit  bool
		wantOut string
		runs    int
	}{
		{"not permitted", false, "cmd\n", 0},
		{"permitted", true, "rc-output\ncmd\n", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ext := map[string]string{}
			if tt.permit {
				ext[extPermitUserRC] = ""
			}
			k := ca.issue(t, c.home, certSpec{keyID: "case rc " + tt.name, principals: []string{login}, extensions: ext})
			out, errOut, err := c.run(k, login, nil, "echo cmd")
			if err != nil || out != tt.wantOut {
				t.Fatalf("ssh = %q (%v %q), want %q", out, err, errOut, tt.wantOut)
			}
			data, _ := os.ReadFile(filepath.Join(home, "rc-runs"))
			if n := strings.Count(string(data), "rc-ran"); n != tt.runs {
				t.Errorf("~/.ssh/rc ran %d times in all, want %d", n, tt.runs)
			}
		})
	}
}

// TestAgentForwarding relays the client's ssh-agent when permitted.
func TestAgentForwarding(t *testing.T) {
	ca := newFakeCA(t)
	a, _ := fastAgent(t, ca, api.TierStaging)
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	sock := startSSHAgent(t)
	k := ca.issue(t, c.home, certSpec{keyID: "case agent-fwd", principals: []string{login}, extensions: stagingExt()})
	add := exec.Command("ssh-add", k.keyPath)
	add.Env = append(c.env(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v %s", err, out)
	}
	out, errOut, err := c.runEnv(k, login, []string{"SSH_AUTH_SOCK=" + sock}, []string{"-A"}, "ssh-add -l")
	if err != nil || !strings.Contains(out, ssh.FingerprintSHA256(k.signer.PublicKey())) {
		t.Fatalf("ssh-add -l through the forwarded agent = %q (%v %q), want the key's fingerprint", out, err, errOut)
	}
}

// TestPortForwarding forwards both ways when permitted.
func TestPortForwarding(t *testing.T) {
	ca := newFakeCA(t)
	a, _ := fastAgent(t, ca, api.TierStaging)
	login := currentUser(t)
	k := ca.issue(t, "", certSpec{keyID: "case fwd", principals: []string{login}, extensions: stagingExt()})
	client, err := goSSHDial(t, ca, a, k, login, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	echo := startEcho(t)
	conn, err := client.Dial("tcp", echo)
	if err != nil {
		t.Fatalf("direct-tcpip: %v", err)
	}
	roundTrip(t, conn, "through direct-tcpip")

	ln, err := client.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcpip-forward: %v", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	back, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial the remote forward: %v", err)
	}
	roundTrip(t, back, "through tcpip-forward")
	a.logs.find(t, map[string]string{"msg": "audit", "action": AuditForward, "key_id": "case fwd"})
}

func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo = %q, %v; want %q", buf, err, msg)
	}
}

// TestSessionRequests covers env, signal, exit-signal, break and keepalive
// with x/crypto/ssh's client, which exposes each request.
func TestSessionRequests(t *testing.T) {
	ca := newFakeCA(t)
	a, _ := fastAgent(t, ca, api.TierStaging)
	login := currentUser(t)
	k := ca.issue(t, "", certSpec{keyID: "case requests", principals: []string{login}, extensions: stagingExt()})
	client, err := goSSHDial(t, ca, a, k, login, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	t.Run("env allowlist", func(t *testing.T) {
		s, _ := client.NewSession()
		defer s.Close()
		if err := s.Setenv("LC_TIME", "C.UTF-8"); err != nil {
			t.Errorf("LC_TIME refused: %v", err)
		}
		if err := s.Setenv("LD_PRELOAD", "/tmp/evil.so"); err == nil {
			t.Error("LD_PRELOAD accepted")
		}
		out, err := s.Output(`echo "lc=$LC_TIME preload=${LD_PRELOAD:-unset}"`)
		if err != nil || string(out) != "lc=C.UTF-8 preload=unset\n" {
			t.Errorf("env = %q, %v", out, err)
		}
	})
	t.Run("signal and exit-signal", func(t *testing.T) {
		s, _ := client.NewSession()
		defer s.Close()
		var out logBuffer // locked: read while ssh writes
		s.Stdout = &out
		if err := s.Start(`trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.05; done`); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
		if err := s.Signal(ssh.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		var ee *ssh.ExitError
		if err := s.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 7 {
			t.Fatalf("Wait = %v, want exit status 7", err)
		}
		s2, _ := client.NewSession()
		defer s2.Close()
		if err := s2.Run("kill -TERM $$"); !errors.As(err, &ee) || ee.Signal() != "TERM" {
			t.Fatalf("Run(kill -TERM $$) = %v, want exit-signal TERM", err)
		}
	})
	t.Run("break needs a terminal", func(t *testing.T) {
		s, _ := client.NewSession()
		defer s.Close()
		payload := ssh.Marshal(struct{ Ms uint32 }{100})
		if ok, err := s.SendRequest("break", true, payload); err != nil || ok {
			t.Errorf("break without a pty = %v, %v; want refused", ok, err)
		}
		if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
			t.Fatal(err)
		}
		if err := s.Start("sleep 5"); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.SendRequest("break", true, payload); err != nil || !ok {
			t.Errorf("break on a pty = %v, %v; want done", ok, err)
		}
	})
	t.Run("keepalive", func(t *testing.T) {
		if ok, _, err := client.SendRequest("keepalive@openssh.com", true, nil); err != nil || ok {
			t.Errorf("global keepalive = %v, %v; want a failure reply", ok, err)
		}
		s, _ := client.NewSession()
		defer s.Close()
		if ok, err := s.SendRequest("keepalive@openssh.com", true, nil); err != nil || ok {
			t.Errorf("channel keepalive = %v, %v; want a failure reply", ok, err)
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSessionEndsOnExpiryAndRevocation: on a production host a session
// ends, with a message, when its certificate expires or is revoked.
func TestSessionEndsOnExpiryAndRevocation(t *testing.T) {
	ca := newFakeCA(t)
	a, _ := fastAgent(t, ca, api.TierProduction)
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	tests := []struct {
		name, want, reason string
		ttl                time.Duration
		revoke             bool
		status             int
	}{
		{name: "expiry", ttl: 2 * time.Second, want: "your certificate expired", reason: "certificate expired", status: ExitCertExpired},
		{name: "revocation", ttl: 20 * time.Minute, revoke: true, want: "your certificate was revoked", reason: "certificate revoked", status: ExitCertRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keyID := "case end " + tt.name
			k := ca.issue(t, c.home, certSpec{tier: api.TierProduction, keyID: keyID, principals: []string{login},
				extensions: productionExt(), ttl: tt.ttl, validAfter: time.Now().Add(-time.Second)})
			start := time.Now()
			lines, wait := c.stream(t, k, login, "echo started; sleep 30; echo not-ended")
			var out strings.Builder
			for l := range lines {
				out.WriteString(l + "\n")
				// Revoke once the session runs: revoking earlier would test
				// the login refusal, not the live session's end.
				if l == "started" && tt.revoke {
					ca.revoke([]uint64{k.cert.Serial}, nil)
				}
			}
			errOut, err := wait()
			if err == nil || strings.Contains(out.String(), "not-ended") || !strings.Contains(out.String(), "started") {
				t.Fatalf("session not ended: %v %q %q", err, out.String(), errOut)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("stderr %q lacks %q", errOut, tt.want)
			}
			// Not ssh's 255 ("connection lost"): the status says why.
			if got := exitCode(err); got != tt.status {
				t.Errorf("ssh exit status %d, want %d (%s); stderr %q", got, tt.status, tt.reason, errOut)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v to end", d)
			}
			m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == keyID })
			if m.EndReason != tt.reason || !m.Complete {
				t.Errorf("recording end reason %q complete %v, want %q", m.EndReason, m.Complete, tt.reason)
			}
		})
	}
}

// TestSFTP serves the sftp subsystem in process (the agent runs as the
// account) and records each request as a marker.
func TestSFTP(t *testing.T) {
	if _, err := exec.LookPath("sftp"); err != nil {
		t.Fatal("sftp not found: install openssh-client")
	}
	ca := newFakeCA(t)
	a, home := fastAgent(t, ca, api.TierStaging)
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{keyID: "case sftp", principals: []string{login}, extensions: stagingExt()})
	sftpRoundTrip(t, c, k, login, home)
	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == "case sftp" })
	checkSFTPMarkers(t, castPath(SpoolDir(a.dataDir), m.SessionID), m)
}

func sftpRoundTrip(t *testing.T, c *sshClient, k *userKey, login, home string) {
	t.Helper()
	local := filepath.Join(c.home, "upload.txt")
	if err := os.WriteFile(local, []byte("payload ✓\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	batch := filepath.Join(c.home, "batch")
	script := "mkdir incoming\nput " + local + " incoming/a.txt\nrename incoming/a.txt incoming/b.txt\nls incoming\n"
	if err := os.WriteFile(batch, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	args := c.args(k, login)
	args = args[:len(args)-1]
	for i, a := range args {
		if a == "-p" {
			args[i] = "-P" // sftp's port flag
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sftp", append(append(args, "-b", batch), login+"@127.0.0.1")...)
	cmd.Env = c.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(home, "incoming", "b.txt"))
	if err != nil || string(got) != "payload ✓\n" {
		t.Fatalf("uploaded file = %q, %v", got, err)
	}
}

func checkSFTPMarkers(t *testing.T, path string, m recorder.Metadata) {
	t.Helper()
	if m.Kind != recorder.KindSubsystem || m.Command != "sftp" || !m.Complete {
		t.Errorf("metadata = %+v, want a complete sftp subsystem recording", m)
	}
	_, evs := readCast(t, path)
	var markers []string
	for _, e := range evs {
		switch e.Code {
		case recorder.CodeMarker:
			markers = append(markers, e.Data)
		case recorder.CodeOutput, recorder.CodeInput:
			t.Errorf("binary SFTP recorded as %q event", e.Code)
		}
	}
	all := strings.Join(markers, "\n")
	for _, want := range []string{"sftp mkdir", "incoming/a.txt\" (write,create,truncate)", "sftp rename", "sftp opendir"} {
		if !strings.Contains(all, want) {
			t.Errorf("markers lack %q:\n%s", want, all)
		}
	}
}

// TestBreakGlassOnProductionHost: a production host trusts the break-glass
// CA too; a break-glass certificate opens one session, once, recorded with
// input and its request id.
func TestBreakGlassOnProductionHost(t *testing.T) {
	ca := newFakeCA(t)
	a, _ := fastAgent(t, ca, api.TierProduction)
	login := currentUser(t)
	ext := map[string]string{extPermitPTY: "", api.ExtTier: api.TierBreakGlass, api.ExtRecordInput: "yes",
		api.ExtOnRecFail: "closed", api.ExtSingleUse: "", api.ExtEndOnExpiry: "", api.ExtRequestID: "REQ-4711"}
	k := ca.issue(t, "", certSpec{tier: api.TierBreakGlass, keyID: "bob@local tier=break-glass req=REQ-4711",
		principals: []string{login}, extensions: ext})
	client, err := goSSHDial(t, ca, a, k, login, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	s, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	s.Stdin = strings.NewReader("typed-secret-input\n")
	out, err := s.Output("read line; echo \"got $line\"")
	if err != nil || string(out) != "got typed-secret-input\n" {
		t.Fatalf("break-glass session: %v %q", err, out)
	}
	if _, err := client.NewSession(); err == nil {
		t.Error("a single-use certificate opened a second session on its connection")
	}
	if _, _, err := goSSHRun(t, ca, a, k, login, "true"); err == nil {
		t.Error("a single-use certificate opened a second connection")
	}
	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.RequestID == "REQ-4711" })
	if m.Tier != api.TierBreakGlass || !m.RecordInput || m.Identity != "bob@local" {
		t.Errorf("metadata = %+v", m)
	}
	_, evs := readCast(t, castPath(SpoolDir(a.dataDir), m.SessionID))
	var in strings.Builder
	for _, e := range evs {
		if e.Code == recorder.CodeInput {
			in.WriteString(e.Data)
		}
	}
	if in.String() != "typed-secret-input\n" {
		t.Errorf("recorded input %q", in.String())
	}
}

// TestShutdownEndsSessions: when Serve's context ends, running sessions
// are told why and exit with ExitAgentStopped (ssh would say 255 for a
// lost connection), their recordings are finished but marked cut short
// with the reason, and Serve returns. A restart (ErrRestarting as the
// cause, what SIGHUP does) says so to the user and in the recording.
func TestShutdownEndsSessions(t *testing.T) {
	for _, tt := range []struct {
		name, message, reason string
		cause                 error
		pty                   bool
	}{
		{name: "stop", cause: nil, message: "the host agent stopped", reason: "agent stopped"},
		{name: "restart", cause: ErrRestarting, message: "the host agent is restarting", reason: "agent restarted"},
		{name: "stop pty", cause: nil, message: "the host agent stopped", reason: "agent stopped", pty: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca := newFakeCA(t)
			a, _ := fastAgent(t, ca, api.TierStaging)
			c := newSSHClient(t, ca, a)
			login := currentUser(t)
			keyID := "case shutdown " + tt.name
			k := ca.issue(t, c.home, certSpec{keyID: keyID, principals: []string{login}, extensions: stagingExt()})
			var extra []string
			if tt.pty {
				extra = []string{"-tt"}
			}
			lines, wait := c.streamArgs(t, k, login, extra, "echo started; sleep 30; echo not-ended")
			if l := strings.TrimSpace(<-lines); l != "started" {
				t.Fatalf("first line %q", l)
			}
			start := time.Now()
			if err := a.stopWith(tt.cause); !errors.Is(err, ErrServerClosed) {
				t.Fatalf("Serve = %v", err)
			}
			var out strings.Builder
			for l := range lines {
				out.WriteString(l + "\n")
			}
			errOut, err := wait()
			if strings.Contains(out.String(), "not-ended") {
				t.Error("session outlived the agent")
			}
			// With a terminal the message is on it (stdout); without, on stderr.
			shown := errOut
			if tt.pty {
				shown = out.String()
			}
			if !strings.Contains(shown, "sshward: session ended: "+tt.message) {
				t.Errorf("ssh: %v, the user was not told: stdout %q stderr %q", err, out.String(), errOut)
			}
			if got := exitCode(err); got != ExitAgentStopped {
				t.Errorf("ssh exit status %d, want %d; stderr %q", got, ExitAgentStopped, errOut)
			}
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("shutdown took %v", d)
			}
			m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == keyID })
			if m.EndReason != tt.reason || m.Complete || m.Incomplete != tt.reason {
				t.Errorf("recording end %q complete %v incomplete %q, want cut short: %q", m.EndReason, m.Complete, m.Incomplete, tt.reason)
			}
			_, evs := readCast(t, castPath(SpoolDir(a.dataDir), m.SessionID))
			if !strings.Contains(output(evs), "started") {
				t.Errorf("the cut recording lost what was recorded: %q", output(evs))
			}
		})
	}
}
