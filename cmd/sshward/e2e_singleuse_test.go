package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sshward/sshward/plugins"
	"github.com/sshward/sshward/plugins/plugintest"
	"github.com/sshward/sshward/plugins/webhook"
)

// TestSingleUseFleetE2E tries to use one break-glass certificate twice
// across a fleet, with the real binaries: sshward-ca serving HTTPS (and a
// webhook notifier plugin), two sshward-agent processes for db1.prod and
// db2.prod, and stock OpenSSH ssh. Every row is an attack or a check of
// what the CA's authority of use promises (DESIGN.md "Trust invariants").
func TestSingleUseFleetE2E(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the default policy's break-glass principal is root: run as root (CI does)")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("ssh not found: apt-get install openssh-client")
	}
	c := newAccessCLI(t)
	if out, err := exec.Command("go", "build", "-o", c.bin+"/", "github.com/sshward/sshward/cmd/sshward-agent").CombinedOutput(); err != nil {
		t.Fatalf("go build sshward-agent: %v\n%s", err, out)
	}
	hook := plugintest.MustBuild(t, "github.com/sshward/sshward/plugins/webhook/cmd/sshward-plugin-webhook")
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	rcv := newAlertReceiver(t)
	secretFile := filepath.Join(work, "webhook.secret")
	if err := os.WriteFile(secretFile, alertSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	enablePlugin(t, caDir, "  - name: webhook\n    kind: notifier\n    path: "+strconv.Quote(hook.Path)+"\n    sha256: "+hook.SHA256+
		"\n    args: ["+strconv.Quote("--url")+", "+strconv.Quote(rcv.URL)+", "+strconv.Quote("--secret-file")+", "+strconv.Quote(secretFile)+"]\n")
	secrets := map[string]string{}
	for _, p := range []struct{ name, groups string }{{"olivia", "oncall"}, {"ian", "incident-commanders"}, {"ivy", "incident-commanders"}} {
		var u struct {
			TOTPSecret string `json:"totp_secret"`
		}
		out := c.ok("", "pw-"+p.name+"-123456\n", "sshward-ca", "users", "add", p.name, "--dir", caDir, "--groups", p.groups, "--totp", "--password-stdin", "--json")
		if err := json.Unmarshal([]byte(out), &u); err != nil {
			t.Fatal(err)
		}
		secrets[p.name] = u.TOTPSecret
	}
	caAddr := freeLoopback(t)
	stopCA := c.serveAt(caDir, caAddr)
	url := "https://" + caAddr
	home := map[string]string{}
	for name, sec := range secrets {
		home[name] = filepath.Join(work, "home-"+name)
		code, err := totp.GenerateCode(sec, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c.ok(home[name], "pw-"+name+"-123456\n", "sshward", "login", "--ca", url, "--fingerprint", initRes.Fingerprint,
			"--user", name, "--password-stdin", "--otp", code)
	}
	olivia, ian, ivy := home["olivia"], home["ian"], home["ivy"]

	// Two production hosts, joined with one-time tokens.
	hosts := map[string]string{} // name → port
	for _, name := range []string{"db1.prod", "db2.prod"} {
		tok := strings.TrimSpace(c.ok("", "", "sshward-ca", "join-token", "--dir", caDir, "--host", name, "--tier", "production"))
		addr := freeLoopback(t)
		c.startAgent(url, initRes.Fingerprint, tok, name, filepath.Join(work, "agent-"+name), addr)
		_, hosts[name], _ = net.SplitHostPort(addr)
	}
	knownHosts := filepath.Join(work, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(c.ok("", "", "sshward-ca", "trust", "--dir", caDir, "--hosts")), 0o600); err != nil {
		t.Fatal(err)
	}
	ssh := func(k breakGlassCert, host string) (string, string, error) {
		cmd := exec.Command("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
			"-o", "UserKnownHostsFile="+knownHosts, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlias="+host,
			"-o", "IdentitiesOnly=yes", "-o", "IdentityFile="+k.Key, "-o", "CertificateFile="+k.Certificate,
			"-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no", "-o", "ConnectTimeout=10",
			"-p", hosts[host], "root@127.0.0.1", "echo admitted-on-"+host)
		cmd.Env = append(os.Environ(), "HOME="+work, "SSH_AUTH_SOCK=")
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	// breakGlass runs the dual-control journey and returns the certificate.
	breakGlass := func(reason string, hostFlags ...string) (breakGlassCert, string) {
		t.Helper()
		var req cliRequest
		args := append([]string{"request", "--tier", "break-glass", "--reason", reason, "--json"}, hostFlags...)
		if err := json.Unmarshal([]byte(c.ok(olivia, "", "sshward", args...)), &req); err != nil {
			t.Fatal(err)
		}
		c.ok(ian, "", "sshward", "approve", req.ID)
		approved := c.ok(ivy, "", "sshward", "approve", req.ID)
		var k breakGlassCert
		if err := json.Unmarshal([]byte(c.ok(olivia, "", "sshward", "cert", "--tier", "break-glass", "--request", req.ID, "--json")), &k); err != nil {
			t.Fatal(err)
		}
		k.Request = req.ID
		return k, approved
	}
	admitted := func(t *testing.T, k breakGlassCert, host string) {
		t.Helper()
		if out, errOut, err := ssh(k, host); err != nil || out != "admitted-on-"+host+"\n" {
			t.Fatalf("ssh %s: refused (%v): %q %q", host, err, out, errOut)
		}
	}
	refused := func(t *testing.T, k breakGlassCert, host, say string) {
		t.Helper()
		out, errOut, err := ssh(k, host)
		if err == nil || strings.Contains(out, "admitted") || !strings.Contains(errOut, say) {
			t.Fatalf("ssh %s: want a refusal saying %q, got %v %q %q", host, say, err, out, errOut)
		}
	}
	const usedMsg = "This single-use certificate was already used"

	t.Run("second host refused, audited and alerted", func(t *testing.T) {
		k, _ := breakGlass("INC-5001 db down")
		admitted(t, k, "db1.prod")
		refused(t, k, "db2.prod", usedMsg)
		refused(t, k, "db1.prod", usedMsg) // the first host's own record
		var evs []alertEvent
		if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "audit", "list", "--dir", caDir, "--type", "request.reuse_refused", "--json")), &evs); err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 {
			t.Fatalf("want one request.reuse_refused event (db1.prod refuses from its own record), got %+v", evs)
		}
		e := evs[0]
		if e.RequestID != k.Request || e.Outcome != "refused" || e.Details["host"] != "db2.prod" || e.Details["first_host"] != "db1.prod" ||
			!strings.HasPrefix(e.ClientAddr, "127.0.0.1:") || e.Details["severity"] != "alert" {
			t.Fatalf("reuse event: %+v", e)
		}
		waitFor(t, "the webhook gets the alert", 20*time.Second, func() bool {
			a, ok := rcv.find("request.reuse_refused", k.Request)
			return ok && a.Details["host"] == "db2.prod" && a.Details["severity"] == "alert" && a.ClientAddr == e.ClientAddr
		})
		var list []struct {
			State  string `json:"state"`
			UsedOn string `json:"used_on"`
		}
		json.Unmarshal([]byte(c.ok(olivia, "", "sshward", "requests", "--all", "--json")), &list)
		if len(list) == 0 || list[0].State != "done" || list[0].UsedOn != "db1.prod" {
			t.Fatalf("request after use: %+v", list)
		}
	})

	t.Run("parallel on two hosts: exactly one admitted", func(t *testing.T) {
		for round := range 4 {
			k, _ := breakGlass(fmt.Sprintf("INC-51%02d race", round))
			var wg sync.WaitGroup
			outs := map[string]string{}
			var mu sync.Mutex
			for _, h := range []string{"db1.prod", "db2.prod"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, errOut, _ := ssh(k, h)
					mu.Lock()
					outs[h] = out + errOut
					mu.Unlock()
				}()
			}
			wg.Wait()
			in := strings.Count(outs["db1.prod"]+outs["db2.prod"], "admitted-on-")
			if in != 1 || !strings.Contains(outs["db1.prod"]+outs["db2.prod"], usedMsg) {
				t.Fatalf("round %d: %d hosts admitted the certificate, want exactly 1: %q", round, in, outs)
			}
		}
	})

	t.Run("after a CA restart still refused", func(t *testing.T) {
		k, _ := breakGlass("INC-5200 restart")
		admitted(t, k, "db1.prod")
		stopCA()
		stopCA = c.serveAt(caDir, caAddr)
		refused(t, k, "db2.prod", usedMsg) // db2 never saw it: the CA's bbolt file says no
	})

	t.Run("CA down: refused, fail closed", func(t *testing.T) {
		k, _ := breakGlass("INC-5300 ca down")
		stopCA()
		refused(t, k, "db1.prod", "The CA could not be reached to confirm that this single-use certificate is unused")
		stopCA = c.serveAt(caDir, caAddr)
		admitted(t, k, "db1.prod") // nothing was spent while the CA was down
	})

	t.Run("target hosts", func(t *testing.T) {
		k, approved := breakGlass("INC-5400 db1 only", "--host", "DB1.prod")
		if !strings.Contains(approved, "once, to db1.prod,") {
			t.Fatalf("approve output lacks the host: %s", approved)
		}
		var list []struct {
			ID    string   `json:"id"`
			Hosts []string `json:"hosts"`
		}
		if err := json.Unmarshal([]byte(c.ok(ian, "", "sshward", "requests", "--all", "--json")), &list); err != nil || len(list) == 0 || list[0].ID != k.Request || fmt.Sprint(list[0].Hosts) != "[db1.prod]" {
			t.Fatalf("the approver's JSON lacks the hosts: %v %+v", err, list)
		}
		if out := c.ok(ian, "", "sshward", "requests", "--all"); !strings.Contains(out, "HOSTS") || !strings.Contains(out, "db1.prod") {
			t.Fatalf("the approver's table lacks the hosts:\n%s", out)
		}
		waitFor(t, "the webhook gets the request with its hosts", 20*time.Second, func() bool {
			e, ok := rcv.find("request.create", k.Request)
			return ok && e.Details["hosts"] == "db1.prod"
		})
		refused(t, k, "db2.prod", "This certificate is for db1.prod only, not db2.prod")
		admitted(t, k, "db1.prod")
		c.refused(2, "not a valid host name", olivia, "sshward", "request", "--tier", "break-glass", "--reason", "INC-5401", "--host", "db1.prod;id")
	})

	if out := c.ok("", "", "sshward-ca", "audit", "verify", "--dir", caDir); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %s", out)
	}
}

type breakGlassCert struct {
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
	Request     string `json:"-"`
}

type alertEvent struct {
	Type       string            `json:"type"`
	RequestID  string            `json:"request_id"`
	ClientAddr string            `json:"client_addr"`
	Outcome    string            `json:"outcome"`
	Details    map[string]string `json:"details"`
}

var alertSecret = []byte("e2e-single-use-webhook-secret-0123")

// alertReceiver is the webhook's far end: it verifies each signed event
// and keeps it.
type alertReceiver struct {
	*httptest.Server
	mu  sync.Mutex // guards evs
	evs []alertEvent
}

func newAlertReceiver(t *testing.T) *alertReceiver {
	r := &alertReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := webhook.Verify(alertSecret, req.Header, body, time.Now(), time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		ev, err := plugins.DecodeEvent(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.evs = append(r.evs, alertEvent{Type: ev.Type, RequestID: ev.RequestID, ClientAddr: ev.ClientAddr, Outcome: ev.Outcome, Details: ev.Details})
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *alertReceiver) find(typ, requestID string) (alertEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.evs {
		if e.Type == typ && e.RequestID == requestID {
			return e, true
		}
	}
	return alertEvent{}, false
}

// enablePlugin puts one plugin entry into the CA's config.yaml.
func enablePlugin(t *testing.T, caDir, entry string) {
	t.Helper()
	p := filepath.Join(caDir, "config.yaml")
	cfg, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "\nplugins: []\n") {
		t.Fatalf("config.yaml has no empty plugins section:\n%s", cfg)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(cfg), "\nplugins: []\n", "\nplugins:\n"+entry, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveAt starts sshward-ca serve on addr and returns a stop function
// that interrupts it and waits for it to exit (also run on cleanup).
func (c *accessCLI) serveAt(dir, addr string) (stop func()) {
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
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		})
	}
	c.t.Cleanup(stop)
	waitServing(c.t, stdout, &logBuf)
	return stop
}

// startAgent runs sshward-agent for one production host until the test ends.
func (c *accessCLI) startAgent(caURL, fingerprint, token, name, dataDir, addr string) {
	c.t.Helper()
	c.startAgentTier("production", caURL, fingerprint, token, name, dataDir, addr)
}

// startAgentTier runs sshward-agent for one host of tier until the test
// ends, with more flags if given.
func (c *accessCLI) startAgentTier(tier, caURL, fingerprint, token, name, dataDir, addr string, more ...string) {
	c.t.Helper()
	c.startAgentProc(tier, caURL, fingerprint, token, name, dataDir, addr, more...)
}

// startAgentProc is startAgentTier returning the process (to kill it).
func (c *accessCLI) startAgentProc(tier, caURL, fingerprint, token, name, dataDir, addr string, more ...string) *exec.Cmd {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "sshward-agent"), append([]string{"--ca", caURL, "--fingerprint", fingerprint, "--join-token", token,
		"--tier", tier, "--data", dataDir, "--listen", addr, "--host-name", name}, more...)...)
	var logBuf lockedBuffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
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
	return cmd
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
