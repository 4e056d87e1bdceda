package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// The kill -9 test runs the agent as a child process: this test binary,
// re-executed with SSHWARD_AGENT_CHILD set, serves a data directory that
// the parent joined, with a CA it cannot reach.

const envChild = "SSHWARD_AGENT_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(childAgent())
	}
	os.Exit(m.Run())
}

// unreachableCA fails every call, as a CA behind a network outage.
type unreachableCA struct{}

func (unreachableCA) Join(context.Context, api.JoinRequest) (*api.HostCertResponse, error) {
	return nil, errCADown
}
func (unreachableCA) RenewHost(context.Context, *ssh.Certificate, ssh.Signer, api.RenewRequest) (*api.HostCertResponse, error) {
	return nil, errCADown
}
func (unreachableCA) HostRevoked(context.Context, string, *ssh.Certificate, ssh.Signer) (*api.RevocationList, error) {
	return nil, errCADown
}

// childAgent serves until SIGTERM (or SIGKILL). Its listen address goes to
// the file the parent named.
func childAgent() int {
	dataDir, addrFile, home := os.Getenv("SSHWARD_CHILD_DATA"), os.Getenv("SSHWARD_CHILD_ADDR"), os.Getenv("SSHWARD_CHILD_HOME")
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	me, err := currentUserName()
	if err != nil {
		log.Error("child", "err", err)
		return 1
	}
	tier := os.Getenv("SSHWARD_CHILD_TIER")
	if tier == "" {
		tier = api.TierStaging
	}
	srv, err := New(Config{Tier: tier, DataDir: dataDir, CA: unreachableCA{}, Logger: log, HostName: "web1",
		LookupUser: func(name string) (*User, error) {
			u, err := LookupUser(name)
			if err == nil && name == me {
				u.Home, u.Shell = home, "/bin/sh"
			}
			return u, err
		}})
	if err != nil {
		log.Error("child", "err", err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Error("child", "err", err)
		return 1
	}
	if err := os.WriteFile(addrFile+".tmp", []byte(ln.Addr().String()), 0o600); err != nil {
		return 1
	}
	if err := os.Rename(addrFile+".tmp", addrFile); err != nil {
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := srv.Serve(ctx, ln); !errors.Is(err, ErrServerClosed) {
		log.Error("child", "err", err)
		return 1
	}
	return 0
}

type childProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *bytes.Buffer
}

func startChild(t *testing.T, dataDir, home string, env ...string) *childProc {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", "SSHWARD_CHILD_DATA="+dataDir,
		"SSHWARD_CHILD_ADDR="+addrFile, "SSHWARD_CHILD_HOME="+home)
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &childProc{cmd: cmd, stderr: &stderr}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if data, err := os.ReadFile(addrFile); err == nil {
			p.addr = string(data)
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("child agent did not start:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKill9RepairsRecording: kill -9 of the agent in the middle of a
// session; the next start repairs the recording (cut to its last newline,
// marked incomplete), and every line written before the kill is still there.
func TestKill9RepairsRecording(t *testing.T) {
	ca := newFakeCA(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	startAgent(t, ca, agentOpts{dataDir: dataDir}).stop() // join once, in process
	home := t.TempDir()
	child := startChild(t, dataDir, home)

	_, port, _ := net.SplitHostPort(child.addr)
	c := newSSHClient(t, ca, &testAgent{port: port})
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{keyID: "case kill9", principals: []string{login}, extensions: stagingExt()})
	lines, wait := c.stream(t, k, login, `i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo "line $i ✓"; sleep 0.005; done`)
	for l := range lines {
		if l == "line 100 ✓" {
			break
		}
	}
	// The spool flushes every second: wait until the cast on disk has
	// some output, then take what is there as "written before the kill".
	spool := SpoolDir(dataDir)
	var castFile string
	waitFor(t, func() bool {
		names, _ := filepath.Glob(filepath.Join(spool, "*.cast"))
		for _, n := range names {
			data, _ := os.ReadFile(n)
			if bytes.Contains(data, []byte("line 50 ")) {
				castFile = n
				return true
			}
		}
		return false
	})
	before, err := os.ReadFile(castFile)
	if err != nil {
		t.Fatal(err)
	}
	before = before[:bytes.LastIndexByte(before, '\n')+1]
	if err := child.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.cmd.Wait()
	go func() {
		for range lines {
		}
	}()
	if _, err := wait(); err == nil {
		t.Error("ssh did not notice the agent's death")
	}

	restarted := startChild(t, dataDir, home)
	id := strings.TrimSuffix(filepath.Base(castFile), ".cast")
	var m recorder.Metadata
	waitFor(t, func() bool {
		m = readRecordings(t, spool)[id]
		return m.Finished
	})
	if m.Complete || m.Incomplete == "" {
		t.Errorf("repaired metadata complete=%v incomplete=%q, want incomplete with a reason", m.Complete, m.Incomplete)
	}
	after, err := os.ReadFile(castFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(after, before) {
		t.Fatalf("lines written before the kill were lost:\nbefore %d bytes, after %d bytes", len(before), len(after))
	}
	if len(after) == 0 || after[len(after)-1] != '\n' {
		t.Error("repaired cast does not end with a whole line")
	}
	_, evs := readCast(t, castFile)                                  // every line parses
	if out := output(evs); !strings.Contains(out, "line 50 ✓\r\n") { // no terminal: LF recorded as CR LF
		t.Errorf("repaired cast lost its output: %q…", out[:min(len(out), 200)])
	}

	st, err := ReadStatus(dataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st.Spool.Incomplete != 1 || st.Spool.Unfinished != 0 || !st.Joined {
		t.Errorf("status = %+v", st.Spool)
	}
	if err := restarted.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := restarted.cmd.Wait(); err != nil {
		t.Errorf("restarted agent exit: %v\n%s", err, restarted.stderr.String())
	}
	if !strings.Contains(restarted.stderr.String(), "repair") {
		t.Errorf("the restarted agent did not log the repair:\n%s", restarted.stderr.String())
	}
}

func currentUserName() (string, error) {
	out, err := exec.Command("id", "-un").Output()
	if err != nil {
		return "", fmt.Errorf("id -un: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
