package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/store/etcdtest"
)

// TestAgentLearnsCAReplicas: two real sshward-ca serve replicas on one real
// etcd; a real sshward-agent is given the URL of the first only. The trust
// bundle names both replicas (each registered itself at start), the agent
// learns the second from it, and when the first is killed with SIGKILL the
// agent keeps working through the second. What each step tries to break:
//
//   - the bundle: GET /v1/trust through either replica lists both URLs;
//   - failover without configuration: a revocation made through the
//     survivor must reach the agent (its revocation stream reopens on a
//     replica it was never given), and a certificate issued through the
//     survivor is admitted;
//   - the CLI, logged in with the first URL only, saves the second from
//     the bundle beside its pinned root and issues through it once the
//     first is dead.
func TestAgentLearnsCAReplicas(t *testing.T) {
	c := newAgentCLI(t)
	ec := etcdtest.Start(t, 1)
	work := t.TempDir()
	dir0, dir1 := filepath.Join(work, "ca0"), filepath.Join(work, "ca1")
	fp := c.initCAWithRoot(dir0)
	useEtcd(t, dir0, ec.Endpoints(), "learn")
	c.ok("", "pw-alice-123456\n", "sshward-ca", "users", "add", "alice", "--dir", dir0, "--groups", "engineers", "--password-stdin")
	if out, err := exec.Command("cp", "-a", dir0, dir1).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	addr0, addr1 := freeLoopback(t), freeLoopback(t)
	ca0 := c.serveProc(dir0, addr0)
	c.serveProc(dir1, addr1)
	url0, url1 := "https://"+addr0, "https://"+addr1

	// The bundle, through each replica, names both.
	for _, u := range []string{url0, url1} {
		cc, err := client.New(client.Config{URL: u, Fingerprint: fp})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := cc.Trust(t.Context())
		if err != nil {
			t.Fatalf("trust through %s: %v", u, err)
		}
		if !slices.Contains(tr.CAReplicas, url0) || !slices.Contains(tr.CAReplicas, url1) {
			t.Fatalf("the trust bundle through %s lists %v, want both %s and %s", u, tr.CAReplicas, url0, url1)
		}
	}

	tok := strings.TrimSpace(c.ok("", "", "sshward-ca", "join-token", "--dir", dir0, "--host", "web1.staging", "--tier", "staging"))
	agentAddr := freeLoopback(t)
	agentLog := c.startAgentLog("staging", url0, fp, tok, "web1.staging", filepath.Join(work, "agent"), agentAddr)
	waitFor(t, "the agent learns the second replica from the trust bundle", 30*time.Second, func() bool {
		return strings.Contains(agentLog.String(), "CA replicas learned") && strings.Contains(agentLog.String(), url1)
	})

	home := filepath.Join(work, "home")
	c.ok(home, "pw-alice-123456\n", "sshward", "login", "--ca", url1, "--fingerprint", fp, "--user", "alice", "--password-stdin")
	issue := func(name string) certOut {
		t.Helper()
		var res certOut
		if err := json.Unmarshal([]byte(c.ok(home, "", "sshward", "cert", "--tier", "staging", "--json")), &res); err != nil {
			t.Fatal(err)
		}
		for _, f := range []*string{&res.Key, &res.Certificate} {
			b, err := os.ReadFile(*f)
			if err != nil {
				t.Fatal(err)
			}
			kept := filepath.Join(work, name+"-"+filepath.Base(*f))
			if err := os.WriteFile(kept, b, 0o600); err != nil {
				t.Fatal(err)
			}
			*f = kept
		}
		return res
	}
	// A CLI given only the first replica learns the second at login.
	home0 := filepath.Join(work, "home0")
	c.ok(home0, "pw-alice-123456\n", "sshward", "login", "--ca", url0, "--fingerprint", fp, "--user", "alice", "--password-stdin")
	var saved struct {
		CA         string   `json:"ca"`
		CAReplicas []string `json:"ca_replicas"`
	}
	if b, err := os.ReadFile(filepath.Join(home0, "config.json")); err != nil || json.Unmarshal(b, &saved) != nil {
		t.Fatalf("read the CLI config: %v", err)
	}
	if saved.CA != url0 || !slices.Equal(saved.CAReplicas, []string{url1}) {
		t.Fatalf("the CLI config after login with %s: ca %q, ca_replicas %v; want the second replica learned", url0, saved.CA, saved.CAReplicas)
	}
	sshAs := func(cert certOut, word string) (string, error) { return sshEcho(agentAddr, cert, word) }
	first := issue("first")
	if out, err := sshAs(first, "before-kill"); err != nil || !strings.Contains(out, "before-kill") {
		t.Fatalf("ssh before the kill: %v\n%s", err, out)
	}

	// The only replica the agent was given dies.
	if err := ca0.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ca0.Wait()
	waitFor(t, "the agent's revocation stream reopens on the learned replica", 60*time.Second, func() bool {
		return strings.Contains(agentLog.String(), "revocation stream open again")
	})
	c.ok("", "", "sshward-ca", "revoke", "--dir", dir1, "--serial", fmt.Sprint(first.Serial))
	waitFor(t, "the agent refuses the certificate revoked through the learned replica", 60*time.Second, func() bool {
		out, err := sshAs(first, "revoked")
		return err != nil && !strings.Contains(out, "revoked")
	})
	// The CLI given only the dead replica issues through the learned one.
	var viaLearned certOut
	if err := json.Unmarshal([]byte(c.ok(home0, "", "sshward", "cert", "--tier", "staging", "--json")), &viaLearned); err != nil {
		t.Fatalf("sshward cert after the kill, configured with %s only: %v", url0, err)
	}
	if viaLearned.Serial == 0 || viaLearned.Serial == first.Serial {
		t.Fatalf("sshward cert through the learned replica: serial %d", viaLearned.Serial)
	}
	second := issue("second")
	if out, err := sshAs(second, "after-kill"); err != nil || !strings.Contains(out, "after-kill") {
		t.Fatalf("ssh with a certificate issued after the kill: %v\n%s", err, out)
	}
}
