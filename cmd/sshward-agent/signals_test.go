package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/agent"
	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/recorder"
)

// TestSignalsEndSessionsWithStatus runs the real sshward-agent binary,
// joined to a real CA, with stock OpenSSH ssh sessions open, and signals
// it as an init system would. SIGHUP restarts it in place (same pid, new
// program): the running session ends with "the host agent is restarting"
// and exit status 253, not ssh's 255, its recording says complete=false
// "agent restarted", and the agent serves again. SIGTERM stops it: the
// same with "the host agent stopped" / "agent stopped", and the process
// exits 0.
func TestSignalsEndSessionsWithStatus(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("ssh not found: apt-get install openssh-client")
	}
	work := t.TempDir()
	bin := filepath.Join(work, "sshward-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/sshward/sshward/cmd/sshward-agent").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	w := catest.New(t, catest.Options{})
	tok, err := w.Authority.NewJoinToken(context.Background(), ca.JoinTokenRequest{Names: []string{"127.0.0.1"}, Tier: api.TierStaging})
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(work, "token")
	if err := os.WriteFile(tokFile, []byte(tok.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	dataDir := filepath.Join(work, "data")
	logFile, err := os.Create(filepath.Join(work, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := mln.Addr().String()
	mln.Close()
	cmd := exec.Command(bin, "--ca", w.URL, "--fingerprint", w.Fingerprint, "--join-token-file", tokFile,
		"--tier", api.TierStaging, "--data", dataDir, "--listen", addr, "--host-name", "127.0.0.1", "--metrics-listen", maddr)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once the agent exited, with waitErr
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	agentLog := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	waitListening := func() {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				// An SSH server speaks first: a version line means it serves.
				c.SetDeadline(time.Now().Add(2 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Close()
				if strings.HasPrefix(line, "SSH-2.0-") {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent does not serve on %s; log:\n%s", addr, agentLog())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitListening()

	home := t.TempDir()
	kh := filepath.Join(home, "known_hosts")
	if err := os.WriteFile(kh, []byte("@cert-authority * "+string(ssh.MarshalAuthorizedKey(w.HostCA.PublicKey()))), 0o600); err != nil {
		t.Fatal(err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	login := me.Username
	keyPath := mintStaging(t, w, home, login)
	// session starts `ssh … remote` and returns once it printed "started";
	// wait returns its stderr and exit status.
	session := func() func() (string, int) {
		t.Helper()
		c := exec.Command("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
			"-o", "UserKnownHostsFile="+kh, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
			"-o", "IdentityFile="+keyPath, "-o", "CertificateFile="+keyPath+"-cert.pub", "-o", "ConnectTimeout=10",
			"-p", port, login+"@127.0.0.1", "echo started; sleep 30; echo not-ended")
		c.Env = append(os.Environ(), "HOME="+home, "SSH_AUTH_SOCK=")
		var errb strings.Builder
		c.Stderr = &errb
		out, err := c.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		if !sc.Scan() || sc.Text() != "started" {
			c.Process.Kill()
			c.Wait()
			t.Fatalf("session did not start: %q; stderr %q; agent log:\n%s", sc.Text(), errb.String(), agentLog())
		}
		return func() (string, int) {
			for sc.Scan() {
				if sc.Text() == "not-ended" {
					t.Error("the session outlived the agent")
				}
			}
			err := c.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return errb.String(), ee.ExitCode()
			}
			return errb.String(), 0
		}
	}
	cut := func(reason string) recorder.Metadata {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			names, _ := filepath.Glob(filepath.Join(agent.SpoolDir(dataDir), "*.json"))
			for _, n := range names {
				var m recorder.Metadata
				if data, err := os.ReadFile(n); err == nil && json.Unmarshal(data, &m) == nil && m.Finished && m.EndReason == reason {
					return m
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no finished recording ended by %q; agent log:\n%s", reason, agentLog())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	for _, step := range []struct {
		sig              syscall.Signal
		message, reason  string
		servesAfterwards bool
	}{
		{syscall.SIGHUP, "sshward: session ended: the host agent is restarting", "agent restarted", true},
		{syscall.SIGTERM, "sshward: session ended: the host agent stopped", "agent stopped", false},
	} {
		wait := session()
		// Metrics (--metrics-listen), the first time round: one session
		// open, its recording in the spool, a valid host certificate.
		if step.sig == syscall.SIGHUP {
			text := scrapeMetrics(t, maddr)
			for _, want := range []string{"sshward_agent_sessions 1\n", "sshward_agent_connections 1\n", "sshward_agent_spool_recordings 1\n",
				"sshward_agent_preauth_unauthenticated 0\n", "go_goroutines "} {
				if !strings.Contains(text, want) {
					t.Errorf("agent /metrics lacks %q:\n%s", want, text)
				}
			}
			if !strings.Contains(text, "sshward_agent_host_certificate_expiry_seconds ") || strings.Contains(text, "sshward_agent_host_certificate_expiry_seconds 0\n") {
				t.Errorf("agent /metrics: no host certificate expiry")
			}
			if resp, err := http.Get("http://" + maddr + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("agent /readyz: %v %v, want 200", resp, err)
			} else {
				resp.Body.Close()
			}
		}
		if err := cmd.Process.Signal(step.sig); err != nil {
			t.Fatal(err)
		}
		errOut, status := wait()
		if status != agent.ExitAgentStopped || !strings.Contains(errOut, step.message) {
			t.Errorf("%v: ssh exit status %d, stderr %q; want %d and %q", step.sig, status, errOut, agent.ExitAgentStopped, step.message)
		}
		m := cut(step.reason)
		if m.Complete || m.Incomplete != step.reason {
			t.Errorf("%v: cut recording complete=%v incomplete=%q, want false and %q", step.sig, m.Complete, m.Incomplete, step.reason)
		}
		if step.servesAfterwards {
			waitListening()
			select {
			case <-exited:
				t.Fatalf("the agent exited on %v instead of restarting: %v\n%s", step.sig, waitErr, agentLog())
			default:
			}
			continue
		}
		select {
		case <-exited:
			if waitErr != nil {
				t.Errorf("the agent stopped with %v; log:\n%s", waitErr, agentLog())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the agent did not stop on %v", step.sig)
		}
	}
	if !strings.Contains(agentLog(), "restarting (SIGHUP)") {
		t.Errorf("the agent's log does not say it restarted:\n%s", agentLog())
	}
}

// mintStaging writes a key and a staging certificate for login, signed by
// the CA's real staging key, under dir; it returns the key's path.
func mintStaging(t *testing.T, w *catest.CA, dir, login string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert := &ssh.Certificate{Key: signer.PublicKey(), Serial: 77001, CertType: ssh.UserCert, KeyId: "alice@local tier=staging",
		ValidPrincipals: []string{login}, ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(30 * time.Minute).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": "", api.ExtTier: api.TierStaging,
			api.ExtRecordInput: "no", api.ExtOnRecFail: "open"}}}
	if err := cert.SignCert(rand.Reader, w.UserCAs[api.TierStaging]); err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "id_alice")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+"-cert.pub", ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// scrapeMetrics GETs http://addr/metrics, retrying while the listener
// comes up.
func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
