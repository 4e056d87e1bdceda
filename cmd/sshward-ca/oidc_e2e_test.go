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

// TestOIDCDeviceLoginCLI: `sshward login --oidc --device` against a CA
// whose config.yaml points at a real glewlwyd on loopback. The test plays
// the user approving the code on another device.
func TestOIDCDeviceLoginCLI(t *testing.T) {
	p := glewlwydtest.Start(t, glewlwydtest.Options{})
	p.AddUser(t, "olga", "olga-pw-1234", []string{"sre"}, true)
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	home := filepath.Join(work, "home")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSHWARD_HOME=" + home, "SSH_AUTH_SOCK="}}
	var initRes struct{ Fingerprint string }
	json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes)
	cfgPath := filepath.Join(caDir, "config.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	s := strings.Replace(string(cfg), `issuer: ""`, `issuer: "`+p.Issuer+`"`, 1)
	s = strings.Replace(s, `client_id: ""`, `client_id: "`+p.ClientID+`"`, 1)
	s = strings.Replace(s, `scopes: [openid, profile, email, groups]`, `scopes: [`+strings.Join(glewlwydtest.Scopes, ", ")+`]`, 1)
	if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	startCA(t, r, caDir, addr)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bins(t), "sshward"), "login", "--ca", "https://"+addr, "--fingerprint", initRes.Fingerprint, "--oidc", "--device")
	cmd.Env = append(os.Environ(), r.env...)
	stderr, _ := cmd.StderrPipe()
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	codeRE := regexp.MustCompile(`enter the code (\S+)`)
	sc := bufio.NewScanner(stderr)
	var said strings.Builder
	code := ""
	for code == "" && sc.Scan() {
		said.WriteString(sc.Text() + "\n")
		if m := codeRE.FindStringSubmatch(sc.Text()); m != nil {
			code = m[1]
		}
	}
	if code == "" {
		t.Fatalf("sshward login --oidc --device printed no code:\n%s", said.String())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	p.ApproveDevice(t, code, "olga", "olga-pw-1234", p.NextOTP(t, "olga"))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("login: %v\n%s%s", err, said.String(), stdout.String())
	}
	if !strings.Contains(stdout.String(), "as olga") || !strings.Contains(stdout.String(), "MFA: yes") {
		t.Fatalf("login output: %s", stdout.String())
	}
	var cert struct {
		Principals []string `json:"principals"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward", "cert", "--tier", "production", "--json")), &cert); err != nil || len(cert.Principals) != 1 || cert.Principals[0] != "olga" {
		t.Fatalf("production cert after OIDC login: %+v %v", cert, err)
	}
}
