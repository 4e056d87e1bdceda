package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// parallelSSH is how many ssh run at once at renewal time (issue 9:
// "32 parallel ssh at renewal time, all succeed, one certificate issued").
const parallelSSH = 32

// TestParallelSSHRenewal runs 32 stock OpenSSH ssh at once through the
// Match exec block `sshward ssh-config` writes, against a real
// sshward-agent that joined a real sshward-ca, at the moment the
// certificate must be renewed. Before the renewal lock, 4 parallel ssh
// failed 18 of 20 times: every --ensure generated its own key and the three
// files raced ("private key contents do not match public"). Each row is a
// way renewal used to break:
//
//   - about to expire: the certificate has under a minute left, so every
//     --ensure wants to renew at once while the others' ssh are reading the
//     key files;
//   - the same with ssh-agent: each renewal also swaps the certificate in
//     the agent while the other ssh list its keys, and leaves one there;
//   - about to expire and revoked: renewal makes a fresh key (the old one
//     may be stolen) while the others wait;
//   - first use: there is no key or certificate at all, so a fresh key is
//     made while 31 other ssh wait for it.
//
// A row with a valid certificate is the baseline (no issuance at all).
//
// Every ssh must be admitted, and the CA's audit log must hold exactly one
// issued certificate per row.
func TestParallelSSHRenewal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the agent runs the session as root here (the test's principal): run as root (CI does)")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("ssh not found: apt-get install openssh-client")
	}
	c := newAccessCLI(t)
	if out, err := exec.Command("go", "build", "-o", c.bin+"/", "github.com/sshward/sshward/cmd/sshward-agent").CombinedOutput(); err != nil {
		t.Fatalf("go build sshward-agent: %v\n%s", err, out)
	}
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	// Staging engineers may also log in as root on staging hosts, so the
	// agent can run the test's command as the user the test runs as.
	pol := filepath.Join(caDir, "policy.yaml")
	b, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	const engineers = `engineers: [deploy, "{{user}}"]`
	if !bytes.Contains(b, []byte(engineers)) {
		t.Fatalf("policy.yaml has no %s line:\n%s", engineers, b)
	}
	if err := os.WriteFile(pol, bytes.Replace(b, []byte(engineers), []byte(`engineers: [deploy, root, "{{user}}"]`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("", "pw-alice-123456\n", "sshward-ca", "users", "add", "alice", "--dir", caDir, "--groups", "engineers", "--password-stdin")
	url := c.serve(caDir)
	home := filepath.Join(work, "home-alice")
	c.ok(home, "pw-alice-123456\n", "sshward", "login", "--ca", url, "--fingerprint", initRes.Fingerprint, "--user", "alice", "--password-stdin")

	tok := strings.TrimSpace(c.ok("", "", "sshward-ca", "join-token", "--dir", caDir, "--host", "web1.staging", "--tier", "staging"))
	addr := freeLoopback(t)
	// All 32 ssh come from one address at once: let the agent's per-source
	// limit of unauthenticated connections (10 by default) admit them.
	c.startAgentTier("staging", url, initRes.Fingerprint, tok, "web1.staging", filepath.Join(work, "agent"), addr,
		"--max-startups-per-source", "64")
	host, port, _ := net.SplitHostPort(addr)

	// The README's setup: the block `sshward ssh-config` prints, then where
	// the host is.
	cfg := c.ok(home, "", "sshward", "ssh-config", "--tier", "staging")
	if !strings.Contains(cfg, "cert --ensure --quiet --tier staging") {
		t.Fatalf("ssh-config has no Match exec block for staging:\n%s", cfg)
	}
	cfg += fmt.Sprintf("\nHost web1.staging\n    HostName %s\n    Port %s\n    HostKeyAlias web1.staging\n    User root\n", host, port)
	sshConfig := filepath.Join(work, "ssh_config")
	if err := os.WriteFile(sshConfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	issued := func() int {
		t.Helper()
		var evs []struct {
			Type, Actor, Outcome string
		}
		out := c.ok("", "", "sshward-ca", "audit", "list", "--dir", caDir, "--type", "cert.issue", "--json")
		if err := json.Unmarshal([]byte(out), &evs); err != nil {
			t.Fatalf("audit list --json: %v\n%s", err, out)
		}
		n := 0
		for _, e := range evs {
			if e.Type == "cert.issue" && e.Actor == "alice" && (e.Outcome == "" || e.Outcome == "ok") {
				n++
			}
		}
		return n
	}
	keyPath := filepath.Join(home, "keys", "staging")

	runAll := func(t *testing.T, wantIssued int, env ...string) {
		t.Helper()
		before := issued()
		type result struct {
			out, errOut string
			err         error
		}
		res := make([]result, parallelSSH)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range parallelSSH {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, "ssh", "-F", sshConfig, "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
					"web1.staging", fmt.Sprintf("echo admitted-%d", i))
				cmd.Env = append(append(os.Environ(), "HOME="+work, "SSH_AUTH_SOCK="), env...)
				var o, e bytes.Buffer
				cmd.Stdout, cmd.Stderr = &o, &e
				err := cmd.Run()
				res[i] = result{o.String(), e.String(), err}
			})
		}
		wg.Wait()
		took := time.Since(start)
		ok := 0
		for i, r := range res {
			if r.err == nil && r.out == fmt.Sprintf("admitted-%d\n", i) {
				ok++
				continue
			}
			t.Errorf("ssh %d: %v: stdout %q stderr %q", i, r.err, r.out, r.errOut)
		}
		n := issued() - before
		t.Logf("%d/%d parallel ssh admitted, %d certificate(s) issued, %s", ok, parallelSSH, n, took.Round(time.Millisecond))
		if n != wantIssued {
			t.Errorf("the CA issued %d certificates for %d parallel ssh, want exactly %d", n, parallelSSH, wantIssued)
		}
	}
	readKey := func() []byte {
		t.Helper()
		b, err := os.ReadFile(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("about to expire", func(t *testing.T) {
		// MinTTL is a minute: a one-minute certificate already has less than
		// the minute --ensure wants left, so every ssh asks to renew.
		var first struct {
			Serial uint64 `json:"serial"`
		}
		if err := json.Unmarshal([]byte(c.ok(home, "", "sshward", "cert", "--tier", "staging", "--ttl", "1m", "--json")), &first); err != nil {
			t.Fatal(err)
		}
		key := readKey()
		runAll(t, 1)
		var now struct {
			Serial      uint64    `json:"serial"`
			ValidBefore time.Time `json:"valid_before"`
			Reused      bool      `json:"reused"`
		}
		if err := json.Unmarshal([]byte(c.ok(home, "", "sshward", "cert", "--tier", "staging", "--ensure", "--json")), &now); err != nil {
			t.Fatal(err)
		}
		if now.Serial == first.Serial || !now.Reused || time.Until(now.ValidBefore) < 30*time.Minute {
			t.Errorf("after the renewal: serial %d (first %d), reused %v, valid until %s; want a new hour-long certificate kept by --ensure",
				now.Serial, first.Serial, now.Reused, now.ValidBefore)
		}
		// The key a renewal certifies is the one ssh may be about to sign with.
		if !bytes.Equal(readKey(), key) {
			t.Error("renewal replaced the private key while its certificate was still valid")
		}
	})

	// The baseline: the same 32 ssh with a certificate that stays valid.
	t.Run("valid", func(t *testing.T) { runAll(t, 0) })

	// With ssh-agent: every renewal also loads the new certificate into the
	// agent and drops the old one while other ssh list the agent's keys.
	t.Run("about to expire, with ssh-agent", func(t *testing.T) {
		sock := filepath.Join(work, "agent.sock")
		ag := exec.Command("ssh-agent", "-D", "-a", sock)
		if err := ag.Start(); err != nil {
			t.Fatalf("ssh-agent: %v", err)
		}
		t.Cleanup(func() {
			ag.Process.Kill()
			ag.Wait()
		})
		waitFor(t, "ssh-agent listens", 10*time.Second, func() bool {
			_, err := os.Stat(sock)
			return err == nil
		})
		var first struct {
			Serial uint64 `json:"serial"`
			Agent  bool   `json:"agent"`
		}
		// c.run clears SSH_AUTH_SOCK: this one runs with the agent.
		cmd := exec.Command(filepath.Join(c.bin, "sshward"), "cert", "--tier", "staging", "--ttl", "1m", "--json")
		cmd.Env = append(os.Environ(), "SSHWARD_HOME="+home, "SSH_AUTH_SOCK="+sock)
		out, err := cmd.Output()
		if err != nil || json.Unmarshal(out, &first) != nil || !first.Agent {
			t.Fatalf("cert into ssh-agent: %v %s", err, out)
		}
		runAll(t, 1, "SSH_AUTH_SOCK="+sock)
		list := exec.Command("ssh-add", "-l")
		list.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		keys, _ := list.Output()
		if n := strings.Count(string(keys), "sshward staging"); n != 1 || strings.Contains(string(keys), fmt.Sprint(first.Serial)) {
			t.Errorf("ssh-agent holds %d sshward staging certificates (want the renewed one only):\n%s", n, keys)
		}
	})

	// A revoked certificate may mean a stolen key: renewal must not certify
	// that key again. Revoked, it admits nobody, so a fresh key is safe.
	t.Run("about to expire and revoked", func(t *testing.T) {
		var cur struct {
			Serial uint64 `json:"serial"`
		}
		if err := json.Unmarshal([]byte(c.ok(home, "", "sshward", "cert", "--tier", "staging", "--ttl", "1m", "--json")), &cur); err != nil {
			t.Fatal(err)
		}
		key := readKey()
		c.ok("", "", "sshward-ca", "revoke", "--dir", caDir, "--serial", fmt.Sprint(cur.Serial))
		runAll(t, 1)
		if bytes.Equal(readKey(), key) {
			t.Error("renewal certified the key of a revoked certificate again")
		}
	})

	t.Run("first use", func(t *testing.T) {
		for _, p := range []string{keyPath, keyPath + ".pub", keyPath + "-cert.pub"} {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		runAll(t, 1)
		for _, p := range []string{keyPath, keyPath + ".pub", keyPath + "-cert.pub", filepath.Join(home, "renew.lock")} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Error(err)
			} else if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
			}
		}
	})
}
