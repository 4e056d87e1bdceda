package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/store/etcdtest"
)

// TestCAReplicaFailover runs two real sshward-ca serve replicas on one real
// etcd, plus a third CA with its own keys and TLS root (a wrong replica: a
// typo in the list, or an attacker's server), and gives the CLI and a real
// sshward-agent all three URLs. What each step tries to break:
//
//   - the wrong CA first in the list: the client must refuse it (another
//     root), never log in there nor take a certificate from it; the
//     certificate must be signed by the real CA's user key;
//   - the wrong CA alone: refused with the fingerprint sentence, exit 1;
//   - kill -9 of the replica everyone is using (agent mid-stream on its
//     revocation watch): the CLI keeps issuing through the other replica,
//     a revocation made through the survivor reaches the agent (its watch
//     failed over), and the agent keeps admitting valid certificates.
func TestCAReplicaFailover(t *testing.T) {
	c := newAgentCLI(t)
	ec := etcdtest.Start(t, 1)
	work := t.TempDir()
	initCA := c.initCAWithRoot
	dir0, dir1, evilDir := filepath.Join(work, "ca0"), filepath.Join(work, "ca1"), filepath.Join(work, "evil")
	fp := initCA(dir0)
	useEtcd(t, dir0, ec.Endpoints(), "failover")
	c.ok("", "pw-alice-123456\n", "sshward-ca", "users", "add", "alice", "--dir", dir0, "--groups", "engineers", "--password-stdin")
	if out, err := exec.Command("cp", "-a", dir0, dir1).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	// The wrong CA knows alice with the same password: only trust keeps
	// the client away from it.
	initCA(evilDir)
	c.ok("", "pw-alice-123456\n", "sshward-ca", "users", "add", "alice", "--dir", evilDir, "--groups", "engineers", "--password-stdin")

	addr0, addr1 := freeLoopback(t), freeLoopback(t)
	ca0 := c.serveProc(dir0, addr0)
	c.serveProc(dir1, addr1)
	evilURL := c.serve(evilDir)
	url0, url1 := "https://"+addr0, "https://"+addr1
	list := strings.Join([]string{evilURL, url0, url1}, ",")

	// The wrong CA alone is refused with the sentence that says why.
	c.refused(1, "does not match the pinned fingerprint", filepath.Join(work, "home-evil"), "sshward", "login", "--ca", evilURL,
		"--fingerprint", fp, "--user", "alice", "--password-stdin")

	home := filepath.Join(work, "home")
	c.ok(home, "pw-alice-123456\n", "sshward", "login", "--ca", list, "--fingerprint", fp, "--user", "alice", "--password-stdin")
	userCA := parseKeyLine(t, c.ok("", "", "sshward-ca", "trust", "--dir", dir0, "--tier", "staging"))
	evilCA := parseKeyLine(t, c.ok("", "", "sshward-ca", "trust", "--dir", evilDir, "--tier", "staging"))
	issue := func() certOut {
		t.Helper()
		var res certOut
		if err := json.Unmarshal([]byte(c.ok(home, "", "sshward", "cert", "--tier", "staging", "--json")), &res); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(res.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			t.Fatal(err)
		}
		cert := pub.(*ssh.Certificate)
		// Keep this certificate and key aside: the next issuance
		// overwrites the files.
		key, err := os.ReadFile(res.Key)
		if err != nil {
			t.Fatal(err)
		}
		res.Key, res.Certificate = filepath.Join(work, fmt.Sprintf("key-%d", res.Serial)), filepath.Join(work, fmt.Sprintf("key-%d-cert.pub", res.Serial))
		if err := os.WriteFile(res.Key, key, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(res.Certificate, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cert.SignatureKey.Marshal(), userCA.Marshal()) {
			t.Fatalf("certificate %d is not signed by the CA's staging key (signed by the wrong CA: %v)", res.Serial,
				bytes.Equal(cert.SignatureKey.Marshal(), evilCA.Marshal()))
		}
		return res
	}
	first := issue()
	// Nothing reached the wrong CA under alice's name.
	var evs []struct{ Type, Actor string }
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "audit", "list", "--dir", evilDir, "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Actor == "alice" {
			t.Fatalf("the wrong CA saw a request from alice: %+v", e)
		}
	}

	// A real agent with the same list.
	tok := strings.TrimSpace(c.ok("", "", "sshward-ca", "join-token", "--dir", dir0, "--host", "web1.staging", "--tier", "staging"))
	agentAddr := freeLoopback(t)
	agentLog := c.startAgentLog("staging", list, fp, tok, "web1.staging", filepath.Join(work, "agent"), agentAddr)
	sshAs := func(cert certOut, word string) (string, error) { return sshEcho(agentAddr, cert, word) }
	if out, err := sshAs(first, "before-kill"); err != nil || !strings.Contains(out, "before-kill") {
		t.Fatalf("ssh before the kill: %v\n%s", err, out)
	}

	// kill -9 of the replica in use (the agent's watch stream is on it).
	if err := ca0.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ca0.Wait()
	killed := time.Now()
	second := issue()
	t.Logf("first certificate after the kill: %v (a new sshward process: wrong CA refused, dead replica refused, survivor)", time.Since(killed).Round(time.Millisecond))
	waitFor(t, "the agent's revocation stream reopens on the surviving replica", 30*time.Second, func() bool {
		return strings.Contains(agentLog.String(), "revocation stream open again")
	})
	if second.Serial == first.Serial {
		t.Fatalf("no new certificate after the kill (serial %d)", second.Serial)
	}
	// A revocation made through the survivor reaches the agent.
	c.ok("", "", "sshward-ca", "revoke", "--dir", dir1, "--serial", fmt.Sprint(first.Serial))
	revoked := time.Now()
	waitFor(t, "the agent refuses the certificate revoked through the surviving replica", 60*time.Second, func() bool {
		out, err := sshAs(first, "revoked")
		return err != nil && !strings.Contains(out, "revoked")
	})
	t.Logf("the agent refused the certificate revoked through the survivor %v after the revocation", time.Since(revoked).Round(time.Millisecond))
	third := issue()
	if out, err := sshAs(third, "after-kill"); err != nil || !strings.Contains(out, "after-kill") {
		t.Fatalf("ssh with a certificate issued after the kill: %v\n%s", err, out)
	}
	c.ok(home, "", "sshward", "status")
}

// initCAWithRoot runs sshward-ca init in dir, lets engineers log in as
// root (the account the agent under test runs sessions as) and returns the
// root fingerprint.
func (c *accessCLI) initCAWithRoot(dir string) string {
	t := c.t
	t.Helper()
	var res struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "init", "--dir", dir, "--json")), &res); err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(dir, "policy.yaml")
	b, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	const engineers = `engineers: [deploy, "{{user}}"]`
	if !bytes.Contains(b, []byte(engineers)) {
		t.Fatalf("policy.yaml has no %s line", engineers)
	}
	if err := os.WriteFile(pol, bytes.Replace(b, []byte(engineers), []byte(`engineers: [deploy, root, "{{user}}"]`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	return res.Fingerprint
}

// newAgentCLI is newAccessCLI with sshward-agent (and the packages in
// more) built too, for tests that run a real agent and log in to it as
// root with stock ssh; it skips when not root.
func newAgentCLI(t *testing.T, more ...string) *accessCLI {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the agent runs the session as root here (the test's principal): run as root (CI does)")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("ssh not found: apt-get install openssh-client")
	}
	c := newAccessCLI(t)
	args := append([]string{"build", "-o", c.bin + "/", "github.com/sshward/sshward/cmd/sshward-agent"}, more...)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return c
}

// useEtcd moves the CA in dir onto etcd (store.etcd in config.yaml, a
// prefix of its own) and removes its unused ca.db.
func useEtcd(t *testing.T, dir string, endpoints []string, prefix string) {
	t.Helper()
	cfg, err := os.OpenFile(filepath.Join(dir, "config.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(cfg, "store:\n  etcd:\n    endpoints: [%s]\n    prefix: %s-%d\n", strings.Join(endpoints, ", "), prefix, time.Now().UnixNano())
	if err := cfg.Close(); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "ca.db"))
}

// sshEcho logs in to the agent at addr as root with cert (stock ssh) and
// runs echo word.
func sshEcho(addr string, cert certOut, word string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("ssh", "-F", "none", "-i", cert.Key, "-o", "CertificateFile="+cert.Certificate, "-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
		"-p", port, "root@"+host, "echo", word)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// certOut is what sshward cert --json prints.
type certOut struct {
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
	Serial      uint64 `json:"serial"`
}

func parseKeyLine(t *testing.T, line string) ssh.PublicKey {
	t.Helper()
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	return pub
}

// serveProc starts sshward-ca serve on addr and returns its process, for
// a test that kills it; it is stopped on cleanup if still running.
func (c *accessCLI) serveProc(dir, addr string) *exec.Cmd {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "sshward-ca"), "serve", "--dir", dir, "--listen", addr)
	cmd.Env = append(os.Environ(), c.env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	var logBuf lockedBuffer
	cmd.Stderr = &logBuf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if c.t.Failed() {
			c.t.Logf("CA %s log:\n%s", addr, logBuf.String())
		}
	})
	waitServing(c.t, stdout, &logBuf)
	return cmd
}

// startAgentLog is startAgentTier that returns the agent's log.
func (c *accessCLI) startAgentLog(tier, caURL, fingerprint, token, name, dataDir, addr string) *lockedBuffer {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "sshward-agent"), "--ca", caURL, "--fingerprint", fingerprint, "--join-token", token,
		"--tier", tier, "--data", dataDir, "--listen", addr, "--host-name", name)
	logBuf := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logBuf, logBuf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if c.t.Failed() {
			c.t.Logf("agent %s log:\n%s", name, logBuf.String())
		}
	})
	waitFor(c.t, "agent "+name+" listens", 30*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return logBuf
}
