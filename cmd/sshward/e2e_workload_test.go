package main_test

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/identity/workloadtest"
)

// TestWorkloadPipelineE2E is a pipeline's journey with real processes: a CI
// token issuer (ciissuer on loopback: discovery, JWKS, ES256 tokens with
// GitHub-Actions-like claims; see its doc for why not glewlwyd), sshward-ca
// serve with a workload_issuers policy, sshward-agent on a production host
// and stock ssh. The token of org/deploy's main branch buys a minute-scale
// certificate through `sshward cert --oidc-token-file` (no login), `ssh
// deploy@host ./deploy.sh` runs, and the recording names the workload.
// The same token again, a feature branch's token through
// $SSHWARD_OIDC_TOKEN, and a token for another audience are refused with
// their reasons.
func TestWorkloadPipelineE2E(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the agent runs the session as the unix user deploy: run as root (CI does)")
	}
	if _, err := user.Lookup("deploy"); err != nil {
		t.Fatal("the unix user deploy is missing: make deps adds it (useradd -m deploy)")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("ssh not found: apt-get install openssh-client")
	}
	c := newAccessCLI(t)
	if out, err := exec.Command("go", "build", "-o", c.bin+"/", "github.com/sshward/sshward/cmd/sshward-agent").CombinedOutput(); err != nil {
		t.Fatalf("go build sshward-agent: %v\n%s", err, out)
	}
	is := workloadtest.Start(t)
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	const aud = "https://ca.sshward.test"
	pol := filepath.Join(caDir, "policy.yaml")
	f, err := os.OpenFile(pol, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("workload_issuers:\n  - issuer: " + is.URL + "\n    audience: " + aud + "\n    max_age: 5m\n    cert_ttl: 3m\n    rules:\n" +
		"      - tier: production\n        principals: [deploy]\n        claims: {repository: org/deploy, ref: refs/heads/main, environment: production}\n")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	caAddr := freeLoopback(t)
	c.serveAt(caDir, caAddr)
	url := "https://" + caAddr

	tok := strings.TrimSpace(c.ok("", "", "sshward-ca", "join-token", "--dir", caDir, "--host", "web1.prod", "--tier", "production"))
	hostAddr := freeLoopback(t)
	agentData := filepath.Join(work, "agent-web1")
	c.startAgent(url, initRes.Fingerprint, tok, "web1.prod", agentData, hostAddr)
	_, port, _ := net.SplitHostPort(hostAddr)
	knownHosts := filepath.Join(work, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(c.ok("", "", "sshward-ca", "trust", "--dir", caDir, "--hosts")), 0o600); err != nil {
		t.Fatal(err)
	}
	// The deploy script, where the unix user deploy can run it.
	scripts, err := os.MkdirTemp("", "sshward-deploy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(scripts) })
	os.Chmod(scripts, 0o755)
	if err := os.WriteFile(filepath.Join(scripts, "deploy.sh"), []byte("#!/bin/sh\necho \"deployed by $(id -un)\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	ci := filepath.Join(work, "runner")
	tokenFile := filepath.Join(work, "oidc-token")
	if err := os.WriteFile(tokenFile, []byte(is.Token(t, workloadtest.Claims(aud, "org/deploy", "refs/heads/main", "production", "4711"))), 0o600); err != nil {
		t.Fatal(err)
	}
	var cert struct {
		Certificate string    `json:"certificate"`
		Key         string    `json:"key"`
		KeyID       string    `json:"key_id"`
		Principals  []string  `json:"principals"`
		ValidAfter  time.Time `json:"valid_after"`
		ValidBefore time.Time `json:"valid_before"`
	}
	out := c.ok(ci, "", "sshward", "cert", "--tier", "production", "--oidc-token-file", tokenFile, "--ca", url, "--fingerprint", initRes.Fingerprint, "--json")
	if err := json.Unmarshal([]byte(out), &cert); err != nil {
		t.Fatalf("cert --json: %v\n%s", err, out)
	}
	const name = "ci:org/deploy@refs/heads/main run=4711"
	if !strings.HasPrefix(cert.KeyID, name+" tier=production ") || strings.Join(cert.Principals, ",") != "deploy" ||
		cert.ValidBefore.Sub(cert.ValidAfter) > 4*time.Minute {
		t.Fatalf("workload certificate: %+v", cert)
	}
	if fi, err := os.Stat(cert.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %s: %v %v, want mode 0600", cert.Key, fi, err)
	}

	cmd := exec.Command("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+knownHosts, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlias=web1.prod",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityFile="+cert.Key, "-o", "CertificateFile="+cert.Certificate,
		"-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no", "-o", "ConnectTimeout=10",
		"-p", port, "deploy@127.0.0.1", "cd "+scripts+" && ./deploy.sh")
	cmd.Env = append(os.Environ(), "HOME="+work, "SSH_AUTH_SOCK=")
	sshOut, err := cmd.CombinedOutput()
	if err != nil || string(sshOut) != "deployed by deploy\n" {
		t.Fatalf("ssh deploy@web1.prod ./deploy.sh: %v\n%s", err, sshOut)
	}

	// The recording names the workload.
	spool := filepath.Join(agentData, "spool")
	var meta struct {
		Identity  string `json:"identity"`
		Principal string `json:"principal"`
		KeyID     string `json:"key_id"`
	}
	var cast []byte
	waitFor(t, "the recording of the deploy is in the agent's spool", 20*time.Second, func() bool {
		ms, _ := filepath.Glob(filepath.Join(spool, "*.json"))
		for _, m := range ms {
			b, err := os.ReadFile(m)
			if err != nil || json.Unmarshal(b, &meta) != nil || meta.Principal != "deploy" {
				continue
			}
			cast, _ = os.ReadFile(strings.TrimSuffix(m, ".json") + ".cast")
			return strings.Contains(string(cast), "deployed by deploy")
		}
		return false
	})
	if meta.Identity != name || meta.KeyID != cert.KeyID || !strings.Contains(string(cast), "user="+name) && !strings.Contains(string(cast), `user=\"`+name) {
		t.Fatalf("recording metadata %+v, want identity %q; cast:\n%.600s", meta, name, cast)
	}

	refused := func(home, say string, env []string, args ...string) {
		t.Helper()
		cc := *c
		cc.env = append(append([]string(nil), c.env...), env...)
		res := cc.run(home, "", "sshward", args...)
		if res.code == 0 || !strings.Contains(res.stderr, say) {
			t.Fatalf("sshward %v: want a refusal saying %q, got exit %d\n%s%s", args, say, res.code, res.stdout, res.stderr)
		}
	}
	// The same token again: replayed.
	refused(ci, "already used", nil, "cert", "--tier", "production", "--oidc-token-file", tokenFile)
	// A feature branch, through the environment variable: no rule matches.
	feature := is.Token(t, workloadtest.Claims(aud, "org/deploy", "refs/heads/feature-x", "production", "4712"))
	refused(ci, `claim ref="refs/heads/feature-x" does not match "refs/heads/main"`, []string{"SSHWARD_OIDC_TOKEN=" + feature}, "cert", "--tier", "production")
	// A token minted for another service.
	other := is.Token(t, workloadtest.Claims("https://other.test", "org/deploy", "refs/heads/main", "production", "4713"))
	refused(ci, `audience is not "`+aud+`"`, []string{"SSHWARD_OIDC_TOKEN=" + other}, "cert", "--tier", "production")

	var evs []struct {
		Actor   string            `json:"actor"`
		Outcome string            `json:"outcome"`
		Reason  string            `json:"reason"`
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "audit", "list", "--dir", caDir, "--type", "cert.issue", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	var issued, refusedN int
	for _, e := range evs {
		if e.Details["method"] != "workload" {
			continue
		}
		if e.Outcome == "ok" && e.Actor == name {
			issued++
		}
		if e.Outcome == "refused" {
			refusedN++
			if strings.Contains(e.Reason, strings.Split(feature, ".")[2]) || strings.Contains(e.Reason, strings.Split(other, ".")[2]) {
				t.Fatalf("the audit reason holds a token: %+v", e)
			}
		}
	}
	if issued != 1 || refusedN != 3 {
		t.Fatalf("audit: %d workload issues, %d refusals; want 1 and 3: %+v", issued, refusedN, evs)
	}
}
