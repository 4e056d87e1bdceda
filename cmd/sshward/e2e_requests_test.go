package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"
)

// accessCLI runs the real sshward and sshward-ca binaries, each person
// with their own $SSHWARD_HOME, as the break-glass journey of DESIGN.md
// ("Three journeys", 2) is lived.
type accessCLI struct {
	t   *testing.T
	bin string
	env []string // shared environment (CA passphrase)
}

type cliResult struct {
	stdout, stderr string
	code           int
}

func newAccessCLI(t *testing.T) *accessCLI {
	t.Helper()
	for _, p := range []string{"ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not installed: apt-get install openssh-client", p)
		}
	}
	bin := t.TempDir()
	out, err := exec.Command("go", "build", "-o", bin+"/", "github.com/sshward/sshward/cmd/sshward-ca", "github.com/sshward/sshward/cmd/sshward").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return &accessCLI{t: t, bin: bin, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSH_AUTH_SOCK="}}
}

// run runs a binary as the person whose home is home ("" for the operator).
func (c *accessCLI) run(home, stdin, name string, args ...string) cliResult {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Env = append(append(os.Environ(), c.env...), "SSHWARD_HOME="+home)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	res := cliResult{stdout: o.String(), stderr: e.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("%s %v: %v", name, args, err)
	}
	return res
}

func (c *accessCLI) ok(home, stdin, name string, args ...string) string {
	c.t.Helper()
	res := c.run(home, stdin, name, args...)
	if res.code != 0 {
		c.t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	return res.stdout
}

// refused runs a verb that must fail with exit status code and say say.
func (c *accessCLI) refused(code int, say, home, name string, args ...string) {
	c.t.Helper()
	res := c.run(home, "", name, args...)
	if res.code != code || !strings.Contains(res.stderr, say) {
		c.t.Fatalf("%s %s: want exit %d saying %q, got %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), code, say, res.code, res.stdout, res.stderr)
	}
}

// serve starts sshward-ca serve and waits for its ready line.
func (c *accessCLI) serve(dir string) string {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
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
	})
	waitServing(c.t, stdout, &logBuf)
	return "https://" + addr
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type cliRequest struct {
	ID              string `json:"id"`
	State           string `json:"state"`
	Requester       string `json:"requester"`
	ApprovalsNeeded int    `json:"approvals_needed"`
	Approvals       []struct {
		By string `json:"by"`
	} `json:"approvals"`
	CanApprove   bool   `json:"can_approve"`
	IssuedSerial uint64 `json:"issued_serial"`
}

func TestBreakGlassJourneyCLI(t *testing.T) {
	c := newAccessCLI(t)
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	people := []struct{ name, groups string }{
		{"olivia", "oncall"},           // on call: asks for break-glass
		{"ian", "incident-commanders"}, // approvers
		{"ivy", "incident-commanders"}, //
	}
	secrets := map[string]string{}
	for _, p := range people {
		var u struct {
			TOTPSecret string `json:"totp_secret"`
		}
		out := c.ok("", "pw-"+p.name+"-123456\n", "sshward-ca", "users", "add", p.name, "--dir", caDir, "--groups", p.groups, "--totp", "--password-stdin", "--json")
		if err := json.Unmarshal([]byte(out), &u); err != nil || u.TOTPSecret == "" {
			t.Fatalf("users add %s: %v %s", p.name, err, out)
		}
		secrets[p.name] = u.TOTPSecret
	}
	url := c.serve(caDir)
	home := map[string]string{}
	for _, p := range people {
		home[p.name] = filepath.Join(work, "home-"+p.name)
		code, err := totp.GenerateCode(secrets[p.name], time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c.ok(home[p.name], "pw-"+p.name+"-123456\n", "sshward", "login", "--ca", url, "--fingerprint", initRes.Fingerprint,
			"--user", p.name, "--password-stdin", "--otp", code)
	}
	olivia, ian, ivy := home["olivia"], home["ian"], home["ivy"]

	// Without a request, break-glass is refused with the way forward.
	c.refused(1, "sshward request --tier break-glass", olivia, "sshward", "cert", "--tier", "break-glass")
	c.refused(2, "--reason", olivia, "sshward", "request", "--tier", "break-glass")

	// 1. Olivia asks.
	var req cliRequest
	if err := json.Unmarshal([]byte(c.ok(olivia, "", "sshward", "request", "--tier", "break-glass", "--reason", "INC-4711 primary db down", "--json")), &req); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(req.ID, "REQ-") || req.State != "pending" || req.ApprovalsNeeded != 2 {
		t.Fatalf("request --json: %+v", req)
	}
	c.refused(1, "your own request", olivia, "sshward", "approve", req.ID)
	c.refused(1, "0 of 2 approvals: wait for 2 more", olivia, "sshward", "cert", "--tier", "break-glass", "--request", req.ID)

	// 2. Ian sees it among the requests he may approve, and approves.
	if out := c.ok(ian, "", "sshward", "requests"); !strings.Contains(out, req.ID) || !strings.Contains(out, "olivia") || !strings.Contains(out, "INC-4711") {
		t.Fatalf("ian's requests:\n%s", out)
	}
	var list []cliRequest
	if err := json.Unmarshal([]byte(c.ok(ian, "", "sshward", "requests", "--json")), &list); err != nil || len(list) != 1 || list[0].ID != req.ID || !list[0].CanApprove {
		t.Fatalf("ian's requests --json: %v %+v", err, list)
	}
	if out := c.ok(ian, "", "sshward", "approve", strings.ToLower(req.ID), "--reason", "bridge agrees"); !strings.Contains(out, "1 of 2") {
		t.Fatalf("first approval: %s", out)
	}
	c.refused(1, "already approved", ian, "sshward", "approve", req.ID)
	c.refused(1, "wait for 1 more", olivia, "sshward", "cert", "--ensure", "--tier", "break-glass")

	// 3. Ivy, a different person, makes it two.
	if out := c.ok(ivy, "", "sshward", "approve", req.ID); !strings.Contains(out, "2 of 2") || !strings.Contains(out, "olivia may now connect") {
		t.Fatalf("second approval: %s", out)
	}

	// 4. The ssh_config auto-fetch picks the approved request by itself.
	res := c.run(olivia, "", "sshward", "cert", "--ensure", "--tier", "break-glass", "--json")
	if res.code != 0 || !strings.Contains(res.stderr, "using access request "+req.ID) {
		t.Fatalf("cert --ensure: %+v", res)
	}
	var cert struct {
		Certificate string    `json:"certificate"`
		Principals  []string  `json:"principals"`
		ValidBefore time.Time `json:"valid_before"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &cert); err != nil {
		t.Fatal(err)
	}
	if left := time.Until(cert.ValidBefore); left > 10*time.Minute || left < 9*time.Minute || len(cert.Principals) != 1 || cert.Principals[0] != "root" {
		t.Fatalf("break-glass cert: %v left, principals %v", left, cert.Principals)
	}
	keygen, err := exec.Command("ssh-keygen", "-L", "-f", cert.Certificate).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, keygen)
	}
	for _, want := range []string{"request-id@sshward", "reason@sshward", "approvers@sshward", "single-use@sshward", "req=" + req.ID, "root"} {
		if !bytes.Contains(keygen, []byte(want)) {
			t.Errorf("ssh-keygen -L lacks %q:\n%s", want, keygen)
		}
	}
	if ttl := keygenValidity(t, string(keygen)); ttl > 11*time.Minute { // 10 minutes + the 1-minute backdate for skew
		t.Errorf("ssh-keygen -L shows a validity of %v, want ≤ 10m (+1m backdate)", ttl)
	}
	// The values the host agent copies into the recording's metadata.
	raw, _ := os.ReadFile(cert.Certificate)
	pk, _, _, _, err := ssh.ParseAuthorizedKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	ext := pk.(*ssh.Certificate).Extensions
	if ext["request-id@sshward"] != req.ID || ext["reason@sshward"] != "INC-4711 primary db down" || ext["approvers@sshward"] != "ian,ivy" {
		t.Errorf("extensions: %v", ext)
	}

	// 5. Single use: the request bought one certificate.
	if err := json.Unmarshal([]byte(c.ok(olivia, "", "sshward", "requests", "--json")), &list); err != nil || len(list) != 1 || list[0].State != "issued" || list[0].IssuedSerial == 0 {
		t.Fatalf("olivia's requests after issuance: %v %+v", err, list)
	}
	c.refused(1, "already used", olivia, "sshward", "cert", "--tier", "break-glass", "--request", req.ID)

	// A second request is denied by one approver: that ends it.
	var second cliRequest
	json.Unmarshal([]byte(c.ok(olivia, "", "sshward", "request", "--tier", "break-glass", "--reason", "INC-4712", "--json")), &second)
	c.refused(2, "--reason", ian, "sshward", "deny", second.ID)
	if out := c.ok(ian, "", "sshward", "deny", second.ID, "--reason", "duplicate of INC-4711"); !strings.Contains(out, "denied "+second.ID) {
		t.Fatalf("deny: %s", out)
	}
	c.refused(1, "denied by ian", ivy, "sshward", "approve", second.ID)
	if out := c.ok(olivia, "", "sshward", "requests", "--all"); !strings.Contains(out, "denied by ian") || !strings.Contains(out, req.ID) {
		t.Fatalf("requests --all:\n%s", out)
	}

	// The auditor's side: every transition is in the chain, and it verifies.
	var events []struct {
		Type      string `json:"type"`
		Actor     string `json:"actor"`
		RequestID string `json:"request_id"`
		Outcome   string `json:"outcome"`
		Reason    string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "audit", "list", "--dir", caDir, "--json")), &events); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range events {
		seen[fmt.Sprintf("%s/%s/%s/%s", e.Type, e.Outcome, e.Actor, e.RequestID)] = true
	}
	for _, want := range []string{
		"request.create/ok/olivia/" + req.ID, "request.approve/refused/olivia/" + req.ID, "request.approve/ok/ian/" + req.ID,
		"request.approve/ok/ivy/" + req.ID, "request.issue/ok/olivia/" + req.ID, "cert.issue/ok/olivia/" + req.ID,
		"request.deny/ok/ian/" + second.ID, "request.approve/refused/ivy/" + second.ID,
	} {
		if !seen[want] {
			t.Errorf("audit lacks %s", want)
		}
	}
	if out := c.ok("", "", "sshward-ca", "audit", "verify", "--dir", caDir); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %s", out)
	}
}

// keygenValidity reads "Valid: from T1 to T2" of ssh-keygen -L.
func keygenValidity(t *testing.T, out string) time.Duration {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && f[0] == "Valid:" && f[1] == "from" && f[3] == "to" {
			from, err1 := time.ParseInLocation("2006-01-02T15:04:05", f[2], time.Local)
			to, err2 := time.ParseInLocation("2006-01-02T15:04:05", f[4], time.Local)
			if err1 != nil || err2 != nil {
				t.Fatalf("unreadable validity %q: %v %v", line, err1, err2)
			}
			return to.Sub(from)
		}
	}
	t.Fatalf("ssh-keygen -L shows no validity:\n%s", out)
	return 0
}

// waitServing waits for sshward-ca serve's first line on stdout ("…serving
// https://…") and drains the rest; log is its stderr, shown on failure.
func waitServing(t *testing.T, stdout io.Reader, log fmt.Stringer) {
	t.Helper()
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		if !strings.Contains(line, "serving https://") {
			t.Fatalf("serve said %q; log: %s", line, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start; log: %s", log.String())
	}
}
