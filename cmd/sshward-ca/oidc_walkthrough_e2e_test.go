package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/identity/glewlwydtest"
)

// The README's "OIDC setup" walkthrough shows these values; the test
// replaces them with what runs here.
const (
	readmeIssuer   = "https://idp.example.com/api/oidc"
	readmeRedirect = "127.0.0.1:8250"
)

// readmeBlock returns the fenced block that follows the marker
// `<!-- oidc-walkthrough: NAME -->` in README.md, unindented.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "<!-- oidc-walkthrough: "+name+" -->")
	if i < 0 {
		t.Fatalf("README.md has no oidc-walkthrough block %q", name)
	}
	lines := strings.Split(s[i:], "\n")[1:]
	var out []string
	indent := ""
	for j, l := range lines {
		trimmed := strings.TrimLeft(l, " ")
		if j == 0 || (j == 1 && trimmed == "") {
			if strings.HasPrefix(trimmed, "```") {
				indent = l[:len(l)-len(trimmed)]
				continue
			}
			if trimmed == "" {
				continue
			}
			t.Fatalf("README.md block %q: no code fence after the marker", name)
		}
		if strings.HasPrefix(trimmed, "```") {
			return strings.Join(out, "\n") + "\n"
		}
		out = append(out, strings.TrimPrefix(l, indent))
	}
	t.Fatalf("README.md block %q: unterminated", name)
	return ""
}

// replaceOIDCSection swaps the oidc: section of a config.yaml for block.
func replaceOIDCSection(t *testing.T, cfg, block string) string {
	t.Helper()
	lines := strings.Split(cfg, "\n")
	var out []string
	in, done := false, false
	for _, l := range lines {
		switch {
		case !done && l == "oidc:":
			in, done = true, true
			out = append(out, strings.TrimRight(block, "\n"))
		case in && (strings.HasPrefix(l, " ") || l == ""):
		default:
			in = false
			out = append(out, l)
		}
	}
	if !done {
		t.Fatal("config.yaml has no oidc: section")
	}
	return strings.Join(out, "\n")
}

// loginRun is one `sshward login` whose stderr the test reads as a user would.
type loginRun struct {
	stdout, stderr string
	err            error
}

// interactiveLogin runs sshward with args; act sees each stderr line and
// returns true once it has played its part (it is not called after that).
func interactiveLogin(t *testing.T, r *runner, act func(line string) bool, args ...string) loginRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bins(t), "sshward"), args...)
	cmd.Env = append(os.Environ(), r.env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var said strings.Builder
	sc := bufio.NewScanner(stderr)
	acted := act == nil
	for sc.Scan() {
		said.WriteString(sc.Text() + "\n")
		if !acted {
			acted = act(sc.Text())
		}
	}
	err = cmd.Wait()
	return loginRun{stdout: stdout.String(), stderr: said.String(), err: err}
}

// TestOIDCWalkthrough follows README.md's "OIDC setup" literally: the
// glewlwyd client and the CA's oidc section are the README's blocks (only
// the issuer and the redirect port differ), glewlwyd is real, and so are the
// sshward CLI and CA. The MFA tier (production) comes only from a login that
// asked for the OTP-gated scope and passed the OTP step.
func TestOIDCWalkthrough(t *testing.T) {
	redirect := freeAddr(t)
	var client map[string]any
	clientJSON := strings.ReplaceAll(readmeBlock(t, "glewlwyd-client"), readmeRedirect, redirect)
	if err := json.Unmarshal([]byte(clientJSON), &client); err != nil {
		t.Fatalf("README's glewlwyd client is not JSON: %v\n%s", err, clientJSON)
	}
	if client["confidential"] != false {
		t.Fatalf("README's client must be public: %v", client["confidential"])
	}
	p := glewlwydtest.Start(t, glewlwydtest.Options{Client: client})
	p.AddUser(t, "olga", "olga-pw-1234", []string{"engineers", "sre"}, true)

	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	home := filepath.Join(work, "home")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSHWARD_HOME=" + home, "SSH_AUTH_SOCK=", "SSHWARD_BROWSER="}}
	var initRes struct{ Fingerprint string }
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	block := readmeBlock(t, "ca-config")
	if !strings.Contains(block, readmeIssuer) || !strings.Contains(block, readmeRedirect) {
		t.Fatalf("README's CA config no longer shows %s and %s; update this test with it:\n%s", readmeIssuer, readmeRedirect, block)
	}
	block = strings.ReplaceAll(strings.ReplaceAll(block, readmeIssuer, p.Issuer), readmeRedirect, redirect)
	cfgPath := filepath.Join(caDir, "config.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(replaceOIDCSection(t, string(cfg), block)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	startCA(t, r, caDir, addr)
	first := []string{"login", "--ca", "https://" + addr, "--fingerprint", initRes.Fingerprint}

	// The browser: open the printed URL, log in, come back to the CLI.
	browser := func(otp func() string) func(string) bool {
		return func(line string) bool {
			u := strings.TrimSpace(line)
			if !strings.HasPrefix(u, p.Issuer+"/auth?") {
				return false
			}
			code := ""
			if otp != nil {
				code = otp()
			}
			p.CompleteAuthCode(t, u, "olga", "olga-pw-1234", code) // fails on a redirect URI the client lacks
			return true
		}
	}
	var login struct {
		User   string   `json:"user"`
		Groups []string `json:"groups"`
		MFA    bool     `json:"mfa"`
	}
	decode := func(lr loginRun) {
		t.Helper()
		if lr.err != nil {
			t.Fatalf("login: %v\nstdout: %s\nstderr: %s", lr.err, lr.stdout, lr.stderr)
		}
		login.MFA = true
		if err := json.Unmarshal([]byte(lr.stdout), &login); err != nil {
			t.Fatalf("login --json printed more than JSON (%v): %q", err, lr.stdout)
		}
		wait := "waiting for the identity provider at " + p.Issuer + " (browser login)"
		if !strings.Contains(lr.stderr, wait) || !strings.Contains(lr.stderr, "(Ctrl-C to stop)") {
			t.Fatalf("login did not say it waits for the provider; stderr:\n%s", lr.stderr)
		}
	}

	// 1. Without --mfa: password only; groups arrive, MFA does not.
	lr := interactiveLogin(t, r, browser(nil), append(first, "--oidc", "--json")...)
	decode(lr)
	if login.User != "olga" || strings.Join(login.Groups, ",") != "engineers,sre" || login.MFA {
		t.Fatalf("login without --mfa: %+v", login)
	}
	if scope := regexp.MustCompile(`scope=[^&\s]*`).FindString(lr.stderr); strings.Contains(scope, "mfa") {
		t.Fatalf("a login without --mfa asked for the MFA scope: %s", scope)
	}
	if res := r.run("", "sshward", "cert", "--tier", "production"); res.code == 0 || !strings.Contains(res.stderr, "multi-factor") {
		t.Fatalf("production cert without MFA: exit %d, %s", res.code, res.stderr)
	}
	r.ok("", "sshward", "cert", "--tier", "staging")
	// sshward status says so, with the fix, in text and JSON.
	if st := r.ok("", "sshward", "status"); !regexp.MustCompile(`(?m)^  production +no: needs MFA: log in again with --oidc --mfa$`).MatchString(st) ||
		!regexp.MustCompile(`(?m)^  staging +yes, as deploy,olga$`).MatchString(st) {
		t.Fatalf("status after a login without MFA:\n%s", st)
	}
	if a := statusAccess(t, r); a["production"].Available || !a["staging"].Available {
		t.Fatalf("status --json after a login without MFA: %+v", a)
	}

	// 2. --mfa, but the OTP step skipped: glewlwyd's device flow approves
	// the OTP-gated scope anyway, without otp in amr. Still no MFA.
	codeRE := regexp.MustCompile(`enter the code (\S+)`)
	lr = interactiveLogin(t, r, func(line string) bool {
		m := codeRE.FindStringSubmatch(line)
		if m != nil {
			p.ApproveDevice(t, m[1], "olga", "olga-pw-1234", "")
		}
		return m != nil
	}, "login", "--oidc", "--mfa", "--device", "--json")
	if lr.err != nil || json.Unmarshal([]byte(lr.stdout), &login) != nil || login.MFA {
		t.Fatalf("device login with the MFA scope but no OTP step: %v %+v\n%s", lr.err, login, lr.stderr)
	}
	if res := r.run("", "sshward", "cert", "--tier", "production"); res.code == 0 {
		t.Fatalf("production cert after a login that skipped OTP: %s", res.stdout)
	}

	// 3. --mfa with the OTP step: MFA, and production.
	lr = interactiveLogin(t, r, browser(func() string { return p.NextOTP(t, "olga") }), "login", "--oidc", "--mfa", "--json")
	decode(lr)
	if !login.MFA {
		t.Fatalf("login with --mfa and OTP: %+v", login)
	}
	if a := statusAccess(t, r); !a["production"].Available || len(a["production"].Reasons) != 0 {
		t.Fatalf("status --json after the MFA login: %+v", a)
	}
	var cert struct {
		Principals []string `json:"principals"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward", "cert", "--tier", "production", "--json")), &cert); err != nil || strings.Join(cert.Principals, ",") != "olga" {
		t.Fatalf("production cert after MFA login: %+v %v", cert, err)
	}
}

type tierAccess struct {
	Available bool     `json:"available"`
	Reasons   []string `json:"reasons"`
}

// statusAccess runs sshward status --json and returns its access by tier.
func statusAccess(t *testing.T, r *runner) map[string]tierAccess {
	t.Helper()
	var st struct {
		Access []struct {
			Tier string `json:"tier"`
			tierAccess
		} `json:"access"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	out := map[string]tierAccess{}
	for _, a := range st.Access {
		out[a.Tier] = a.tierAccess
	}
	return out
}

// TestOIDCLoginTimeout: nobody completes the browser login; the CLI says
// it waits, then gives up after --timeout with one sentence, nothing on
// stdout (--json), and exit 1.
func TestOIDCLoginTimeout(t *testing.T) {
	p := glewlwydtest.Start(t, glewlwydtest.Options{})
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSHWARD_HOME=" + filepath.Join(work, "home"), "SSHWARD_BROWSER="}}
	var initRes struct{ Fingerprint string }
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(caDir, "config.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	s := strings.Replace(string(cfg), `issuer: ""`, `issuer: "`+p.Issuer+`"`, 1)
	s = strings.Replace(s, `client_id: ""`, `client_id: "`+p.ClientID+`"`, 1)
	if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	startCA(t, r, caDir, addr)
	res := r.run("", "sshward", "login", "--ca", "https://"+addr, "--fingerprint", initRes.Fingerprint, "--oidc", "--timeout", "2s", "--json")
	if res.code != 1 || res.stdout != "" {
		t.Fatalf("login that nobody completes: exit %d, stdout %q, stderr %s", res.code, res.stdout, res.stderr)
	}
	for _, want := range []string{
		"waiting for the identity provider at " + p.Issuer + " (browser login), 0s of 2s (Ctrl-C to stop)",
		"gave up waiting for the identity provider at " + p.Issuer + " (browser login) after 2s",
	} {
		if !strings.Contains(res.stderr, want) {
			t.Fatalf("stderr lacks %q:\n%s", want, res.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "home", "session.json")); err == nil {
		t.Fatal("a login that timed out left a session")
	}
}
