package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// TestDemoJourney runs `sshward-demo` like `make demo` does, then follows
// the printed engineer journey with the real binaries and stock ssh:
// login with password + TOTP, plain ssh to a staging and a production host
// through the demo's ssh_config, and the recordings in the agents' spools.
func TestDemoJourney(t *testing.T) {
	bin := binaries(t)
	dir := filepath.Join(t.TempDir(), "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	demo := exec.CommandContext(ctx, filepath.Join(bin, "sshward-demo"), "--dir", dir, "--listen", "127.0.0.1:0")
	demo.Stderr = os.Stderr
	// When the deadline passes, ask the demo to stop its servers first.
	demo.Cancel = func() error { return demo.Process.Signal(os.Interrupt) }
	demo.WaitDelay = 10 * time.Second
	stdout, _ := demo.StdoutPipe()
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		demo.Process.Signal(os.Interrupt)
		demo.Wait()
	})
	var printed strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "audit verify") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	text := printed.String()
	for _, want := range []string{"sshward demo is running", "login --ca https://127.0.0.1:", "--fingerprint", "ssh -F " + dir + "/ssh_config web1.staging", "audrey",
		"Journey 2, break-glass", "request --tier break-glass", "--user ivan", "--user irene", "approve REQ-", "ssh_config root@db1.prod",
		"Journey 4, on call", "ssh_config db1.oncall", "request --tier prod-ro", "handover --dir " + dir,
		"Journey 5, need-to-know scope", "--label app=billing", "ssh_config db1.scoped",
		"Journey 6, a pipeline", "ci-token --dir " + dir, "ssh_config web1.ci"} {
		if !strings.Contains(text, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, text)
		}
	}
	var st struct {
		CA, Fingerprint string
		Users           []struct{ Name, Password, TOTP_Secret string }
		Hosts           []struct{ Name, Tier, Data string }
	}
	b, err := os.ReadFile(filepath.Join(dir, "demo.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Users []struct {
			TOTP string `json:"totp_secret"`
		} `json:"users"`
	}
	json.Unmarshal(b, &raw)
	eng := st.Users[0]
	home := filepath.Join(dir, "home-"+eng.Name)
	env := append(os.Environ(), "SSHWARD_HOME="+home, "SSH_AUTH_SOCK=")
	run := func(stdin string, name string, args ...string) string {
		t.Helper()
		c := exec.CommandContext(ctx, name, args...)
		c.Env = env
		c.Stdin = strings.NewReader(stdin)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	// The code the demo tells people to use (the seeded session spent the
	// current one for this user).
	code := strings.TrimSpace(run("", filepath.Join(bin, "sshward-demo"), "code", eng.Name, "--dir", dir))
	run(eng.Password+"\n", filepath.Join(bin, "sshward"), "login", "--ca", st.CA, "--fingerprint", st.Fingerprint, "--user", eng.Name, "--password-stdin", "--otp", code)
	cfg := filepath.Join(dir, "ssh_config")
	if got := run("", "ssh", "-F", cfg, "-o", "BatchMode=yes", "web1.staging", "echo staging-$((6*7))"); !strings.Contains(got, "staging-42") {
		t.Fatalf("ssh web1.staging: %s", got)
	}
	if got := run("", "ssh", "-F", cfg, "-o", "BatchMode=yes", "db1.prod", "echo prod-$((6*7)); id -un"); !strings.Contains(got, "prod-42") || !strings.Contains(got, eng.Name) {
		t.Fatalf("ssh db1.prod: %s", got)
	}
	if got := run("", filepath.Join(bin, "sshward"), "status"); !strings.Contains(got, "production") || !strings.Contains(got, "staging") {
		t.Errorf("status: %s", got)
	}

	// Journey 2: break-glass with dual control. The engineer asks; two
	// incident commanders (each with their own sshward home) approve; the
	// engineer's next plain ssh as root gets a single-use certificate.
	var req struct{ ID, State string }
	if err := json.Unmarshal([]byte(run("", filepath.Join(bin, "sshward"), "request", "--tier", "break-glass", "--reason", "INC-4711 disk full", "--json")), &req); err != nil || req.State != "pending" {
		t.Fatalf("request --json: %+v %v", req, err)
	}
	for i, ic := range st.Users[1:3] {
		icHome := filepath.Join(dir, "home-"+ic.Name)
		icEnv := append(os.Environ(), "SSHWARD_HOME="+icHome, "SSH_AUTH_SOCK=")
		c, _ := totp.GenerateCode(raw.Users[i+1].TOTP, time.Now())
		for _, args := range [][]string{
			{"login", "--ca", st.CA, "--fingerprint", st.Fingerprint, "--user", ic.Name, "--password-stdin", "--otp", c},
			{"approve", req.ID, "--reason", "seen the incident"},
		} {
			cmd := exec.CommandContext(ctx, filepath.Join(bin, "sshward"), args...)
			cmd.Env, cmd.Stdin = icEnv, strings.NewReader(ic.Password+"\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s %v: %v\n%s", ic.Name, args[0], err, out)
			}
		}
	}
	if got := run("", "ssh", "-F", cfg, "-o", "BatchMode=yes", "root@db1.prod", "echo glass-$((6*7))"); !strings.Contains(got, "glass-42") {
		t.Fatalf("break-glass ssh: %s", got)
	}
	// Single use: the same certificate opens no second session.
	c := exec.CommandContext(ctx, "ssh", "-F", cfg, "-o", "BatchMode=yes", "root@db1.prod", "echo again")
	c.Env = env
	if out, err := c.CombinedOutput(); err == nil || strings.Contains(string(out), "again") {
		t.Fatalf("a single-use break-glass certificate opened a second session: %s", out)
	}
	// The agent tells the CA the request was used: the audit chain has it.
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := run("", filepath.Join(bin, "sshward-ca"), "audit", "list", "--dir", filepath.Join(dir, "ca"), "--type", "request.use")
		if strings.Contains(out, "request.use") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request.use audit event after the session:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := run("", filepath.Join(bin, "sshward-ca"), "audit", "verify", "--dir", filepath.Join(dir, "ca")); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %s", out)
	}

	// Journey 3: the auditor finds the sessions on the playback server,
	// the break-glass one flagged, and exports one that asciinema plays.
	// An engineer is refused.
	c = exec.CommandContext(ctx, filepath.Join(bin, "sshward"), "sessions")
	c.Env = env
	if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "auditor") {
		t.Fatalf("engineer listing sessions: err %v, %s", err, out)
	}
	au := st.Users[3]
	auEnv := append(os.Environ(), "SSHWARD_HOME="+filepath.Join(dir, "home-"+au.Name), "SSH_AUTH_SOCK=")
	auRun := func(stdin string, args ...string) string {
		t.Helper()
		c := exec.CommandContext(ctx, filepath.Join(bin, "sshward"), args...)
		c.Env, c.Stdin = auEnv, strings.NewReader(stdin)
		out, err := c.Output()
		if err != nil {
			t.Fatalf("auditor %v: %v %s", args, err, out)
		}
		return string(out)
	}
	auCode, _ := totp.GenerateCode(raw.Users[3].TOTP, time.Now())
	auRun(au.Password+"\n", "login", "--ca", st.CA, "--fingerprint", st.Fingerprint, "--user", au.Name, "--password-stdin", "--otp", auCode)
	// Agents ship recordings to the playback server (and then drop them
	// from their spools): every session of the journeys arrives there.
	var sessions []struct {
		ID         string   `json:"id"`
		Tier       string   `json:"tier"`
		Principal  string   `json:"principal"`
		BreakGlass bool     `json:"break_glass"`
		RequestID  string   `json:"request_id"`
		Reason     string   `json:"reason"`
		Approvers  []string `json:"approvers"`
		Live       bool     `json:"live"`
		Integrity  string   `json:"integrity"`
	}
	deadline = time.Now().Add(30 * time.Second)
	var glass string
	for glass == "" {
		if err := json.Unmarshal([]byte(auRun("", "sessions", "--json")), &sessions); err != nil {
			t.Fatal(err)
		}
		for _, s := range sessions {
			if s.BreakGlass && s.RequestID == req.ID && !s.Live {
				glass = s.ID
			}
		}
		if glass == "" && time.Now().After(deadline) {
			t.Fatalf("the break-glass session never reached the playback server: %+v", sessions)
		}
		time.Sleep(300 * time.Millisecond)
	}
	for _, s := range sessions {
		if s.ID != glass {
			continue
		}
		if s.Tier != "break-glass" || s.Principal != "root" || s.Reason != "INC-4711 disk full" ||
			strings.Join(s.Approvers, ",") != st.Users[1].Name+","+st.Users[2].Name || s.Integrity != "verified" {
			t.Errorf("break-glass session on the playback server: %+v", s)
		}
	}
	for _, word := range []string{"deploying release 42", "uname", "staging-42", "prod-42", "glass-42"} {
		deadline := time.Now().Add(20 * time.Second)
		for got := ""; !strings.Contains(got, word); {
			if time.Now().After(deadline) {
				t.Fatalf("search for %q found nothing: %s", word, got)
			}
			got = auRun("", "sessions", "--grep", word)
			time.Sleep(200 * time.Millisecond)
		}
	}
	cast := filepath.Join(t.TempDir(), "glass.cast")
	if err := os.WriteFile(cast, []byte(auRun("", "export", glass)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("asciinema"); err != nil {
		t.Fatal("asciinema not installed: apt-get install asciinema (make test does this)")
	}
	out, err := exec.Command("script", "-qec", "asciinema cat "+cast, "/dev/null").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "glass-42") {
		t.Fatalf("asciinema cat of the exported break-glass session: %v\n%s", err, out)
	}

	onCallJourney(ctx, t, bin, dir, env, run)
	scopeJourney(ctx, t, bin, dir, env, run)
	pipelineJourney(ctx, t, bin, dir, st.CA, st.Fingerprint)
}

// pipelineJourney follows journey 6: a CI job's token from the demo's
// issuer buys a staging certificate without a login, ssh runs with it and
// the audit names the workload; a feature branch's token is refused.
func pipelineJourney(ctx context.Context, t *testing.T, bin, dir, ca, fp string) {
	env := append(os.Environ(), "SSHWARD_HOME="+filepath.Join(dir, "home-ci"), "SSH_AUTH_SOCK=")
	token := func(ref string) string {
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "sshward-demo"), "ci-token", "--dir", dir, "--ref", ref).Output()
		if err != nil || strings.Count(string(out), ".") != 2 {
			t.Fatalf("ci-token: %v %q", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	cert := exec.CommandContext(ctx, filepath.Join(bin, "sshward"), "cert", "--tier", "staging", "--ca", ca, "--fingerprint", fp, "--json")
	cert.Env = append(env, "SSHWARD_OIDC_TOKEN="+token("refs/heads/main"))
	if out, err := cert.CombinedOutput(); err != nil || !strings.Contains(string(out), "ci:demo/deploy@refs/heads/main") {
		t.Fatalf("pipeline cert: %v\n%s", err, out)
	}
	ssh := exec.CommandContext(ctx, "ssh", "-F", filepath.Join(dir, "ssh_config"), "-o", "BatchMode=yes", "web1.ci", "echo ci-$((6*7))")
	ssh.Env = env
	if out, err := ssh.CombinedOutput(); err != nil || !strings.Contains(string(out), "ci-42") {
		t.Fatalf("pipeline ssh web1.ci: %v\n%s", err, out)
	}
	feature := exec.CommandContext(ctx, filepath.Join(bin, "sshward"), "cert", "--tier", "staging")
	feature.Env = append(env, "SSHWARD_OIDC_TOKEN="+token("refs/heads/feature"))
	if out, err := feature.CombinedOutput(); err == nil || !strings.Contains(string(out), "ref") {
		t.Fatalf("a feature branch's token: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "sshward-ca"), "audit", "list", "--dir", filepath.Join(dir, "ca"), "--type", "cert.issue").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ci:demo/deploy@refs/heads/main") {
		t.Fatalf("audit of the pipeline's certificate: %v\n%s", err, out)
	}
}

// scopeJourney follows journey 5: a certificate scoped to app=billing is
// refused on db1.prod (app=db), naming the scope; one scoped to app=db is
// admitted.
func scopeJourney(ctx context.Context, t *testing.T, bin, dir string, env []string, run func(string, string, ...string) string) {
	cfg := filepath.Join(dir, "ssh_config")
	if got := run("", filepath.Join(bin, "sshward"), "cert", "--tier", "production", "--label", "app=billing"); !strings.Contains(got, "scoped to labels app=billing") {
		t.Fatalf("scoped cert: %s", got)
	}
	c := exec.CommandContext(ctx, "ssh", "-F", cfg, "-o", "BatchMode=yes", "db1.scoped", "echo scoped")
	c.Env = env
	if out, err := c.CombinedOutput(); err == nil || strings.Contains(string(out), "scoped\n") || !strings.Contains(string(out), "scoped to labels app=billing") {
		t.Fatalf("a billing-scoped certificate on db1.prod: %v\n%s", err, out)
	}
	run("", filepath.Join(bin, "sshward"), "cert", "--tier", "production", "--label", "app=db")
	if got := run("", "ssh", "-F", cfg, "-o", "BatchMode=yes", "db1.scoped", "echo scope-$((6*7))"); !strings.Contains(got, "scope-42") {
		t.Fatalf("ssh db1.scoped with an app=db certificate: %s", got)
	}
}

// onCallJourney follows journey 4 as printed: the engineer on call reaches
// db1.prod through the on-call tier and gets read-only access approved at
// once; `sshward-demo handover` ends the shift, which ends the live
// session with the reason and refuses the next one.
func onCallJourney(ctx context.Context, t *testing.T, bin, dir string, env []string, run func(string, string, ...string) string) {
	cfg := filepath.Join(dir, "ssh_config")
	if got := run("", filepath.Join(bin, "sshward-ca"), "oncall", "--dir", filepath.Join(dir, "ca")); !strings.Contains(got, "sre-primary") {
		t.Fatalf("sshward-ca oncall: %s", got)
	}
	if got := run("", "ssh", "-F", cfg, "-o", "BatchMode=yes", "db1.oncall", "echo oncall-$((6*7))"); !strings.Contains(got, "oncall-42") {
		t.Fatalf("ssh db1.oncall: %s", got)
	}
	if got := run("", filepath.Join(bin, "sshward"), "request", "--tier", "prod-ro", "--reason", "check the queue"); !strings.Contains(got, "Approved at once: you are on call") {
		t.Fatalf("on-call read-only request: %s", got)
	}
	if got := run("", "ssh", "-F", cfg, "-o", "BatchMode=yes", "db1.ro", "echo ro-$((6*7))"); !strings.Contains(got, "ro-42") {
		t.Fatalf("ssh db1.ro: %s", got)
	}
	// A live on-call session; the handover ends it.
	live := exec.CommandContext(ctx, "ssh", "-F", cfg, "-o", "BatchMode=yes", "db1.oncall", "echo started; sleep 120; echo not-ended")
	live.Env = env
	// The terminal's output goes to a file the test reads while ssh writes.
	outPath := filepath.Join(t.TempDir(), "oncall-session.out")
	outFile, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	liveOut := func() string { b, _ := os.ReadFile(outPath); return string(b) }
	live.Stdout, live.Stderr = outFile, outFile
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- live.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(liveOut(), "started") {
		if time.Now().After(deadline) {
			t.Fatalf("the on-call session did not start: %s", liveOut())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := run("", filepath.Join(bin, "sshward-demo"), "handover", "--dir", dir); !strings.Contains(got, "carries the pager") {
		t.Fatalf("handover: %s", got)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the on-call session outlived the shift: %s", liveOut())
	}
	if got := liveOut(); !strings.Contains(got, "your on-call shift ended") || strings.Contains(got, "not-ended") {
		t.Fatalf("the ended session's terminal says:\n%s", got)
	}
	again := exec.CommandContext(ctx, "ssh", "-F", cfg, "-o", "BatchMode=yes", "db1.oncall", "echo again")
	again.Env = env
	if out, err := again.CombinedOutput(); err == nil || strings.Contains(string(out), "again") {
		t.Fatalf("ssh db1.oncall after the shift ended: %v %s", err, out)
	}
	if got := run("", filepath.Join(bin, "sshward-ca"), "audit", "list", "--dir", filepath.Join(dir, "ca"), "--type", "oncall.shift_end"); !strings.Contains(got, "oncall.shift_end") {
		t.Fatalf("no oncall.shift_end audit record: %s", got)
	}
}
