package main_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
)

// TestHostCARotationWithStockSSH: the host CA rotates while sshward-ca
// serves. One stock sshd carries a host certificate of the old key, another
// one of the new key. Stock ssh with the known_hosts that `sshward
// ssh-config` writes during the overlap accepts both hosts by their
// certificate (no trust on first use); after `keys retire --host-ca` and a
// new `sshward ssh-config`, the same ssh refuses the old-key host and still
// accepts the new-key one. ssh-config prints one @cert-authority line per
// trusted key; the audit records both steps with both fingerprints.
func TestHostCARotationWithStockSSH(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Fatal("sshd not found: install openssh-server (make deps)")
	}
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	home := filepath.Join(work, "home")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=host-rotate-passphrase-7", "SSHWARD_HOME=" + home, "SSH_AUTH_SOCK="}}
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
		HostCA      string `json:"host_ca"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	r.ok("password-dana-12\n", "sshward-ca", "users", "add", "dana", "--groups", "engineers", "--password-stdin", "--dir", caDir)
	addr := freeAddr(t)
	startCA(t, r, caDir, addr)
	r.ok("password-dana-12\n", "sshward", "login", "--ca", "https://"+addr, "--fingerprint", initRes.Fingerprint, "--user", "dana", "--password-stdin")
	root, err := os.ReadFile(filepath.Join(home, "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := client.New(client.Config{URL: "https://" + addr, RootPEM: root})
	if err != nil {
		t.Fatal(err)
	}

	oldHost := joinStockSSHD(t, r, cc, caDir, "old.staging")
	if res := r.run("", "sshward-ca", "keys", "rotate", "--dir", caDir, "--host-ca", "--overlap", "1h"); res.code != 1 || !strings.Contains(res.stderr, "shorter than the host certificate lifetime") {
		t.Fatalf("host CA rotation with a short overlap: %d %q", res.code, res.stderr)
	}
	var rot struct {
		HostCA   bool   `json:"host_ca"`
		Previous string `json:"previous_fingerprint"`
		Current  string `json:"current_fingerprint"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "keys", "rotate", "--dir", caDir, "--host-ca", "--json")), &rot); err != nil {
		t.Fatal(err)
	}
	if !rot.HostCA || rot.Previous == "" || rot.Current == rot.Previous {
		t.Fatalf("keys rotate --host-ca --json: %+v", rot)
	}
	newHost := joinStockSSHD(t, r, cc, caDir, "new.staging")
	if oldHost.signedBy != rot.Previous || newHost.signedBy != rot.Current {
		t.Fatalf("host certificates signed by %s and %s, want %s then %s", oldHost.signedBy, newHost.signedBy, rot.Previous, rot.Current)
	}
	if got := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--hosts")); len(got) != 2 || !strings.HasPrefix(got[0], "@cert-authority * ") || !strings.Contains(got[1], "(previous, retires ") {
		t.Fatalf("trust --hosts during the overlap: %q", got)
	}
	if list := r.ok("", "sshward-ca", "keys", "list", "--dir", caDir); !strings.Contains(list, "(host CA)") || !strings.Contains(list, rot.Previous) {
		t.Fatalf("keys list during the overlap:\n%s", list)
	}

	// During the overlap: both hosts are accepted by their certificate.
	cfg := r.ok("", "sshward", "ssh-config")
	if n := strings.Count(cfg, "@cert-authority * "); n != 2 {
		t.Fatalf("ssh-config during the overlap shows %d @cert-authority lines:\n%s", n, cfg)
	}
	knownHosts := filepath.Join(home, "known_hosts")
	for _, h := range []*stockHost{oldHost, newHost} {
		if out, ok := sshHostCheck(t, knownHosts, h); !ok {
			t.Fatalf("during the overlap, ssh did not accept %s (cert of %s):\n%s", h.name, h.signedBy, out)
		}
	}

	if res := r.run("", "sshward-ca", "keys", "retire", "--dir", caDir, "--host-ca"); res.code != 1 || !strings.Contains(res.stderr, "pass --force") {
		t.Fatalf("host CA retirement before the overlap ends: %d %q", res.code, res.stderr)
	}
	if out := r.ok("", "sshward-ca", "keys", "retire", "--dir", caDir, "--host-ca", "--force"); !strings.Contains(out, "retired "+rot.Previous) {
		t.Fatalf("retire said %q", out)
	}
	if _, err := os.Stat(filepath.Join(caDir, "keys", "host-ca.prev.key")); !os.IsNotExist(err) {
		t.Fatalf("the retired host CA private key is still there: %v", err)
	}
	cfg = r.ok("", "sshward", "ssh-config")
	if n := strings.Count(cfg, "@cert-authority * "); n != 1 {
		t.Fatalf("ssh-config after retirement shows %d @cert-authority lines:\n%s", n, cfg)
	}
	if out, ok := sshHostCheck(t, knownHosts, oldHost); ok || !strings.Contains(out, "Host key verification failed") {
		t.Fatalf("after retirement, ssh accepted the host of the retired key (or failed otherwise):\n%s", out)
	}
	if out, ok := sshHostCheck(t, knownHosts, newHost); !ok {
		t.Fatalf("after retirement, ssh did not accept the new-key host:\n%s", out)
	}

	audit := r.ok("", "sshward-ca", "audit", "list", "--dir", caDir, "--json")
	for _, want := range []string{`"key.rotate"`, `"key.retire"`, `"host-ca"`, rot.Previous, rot.Current} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %s:\n%s", want, audit)
		}
	}
	if out := r.ok("", "sshward-ca", "audit", "verify", "--dir", caDir); !strings.Contains(out, "audit chain intact") {
		t.Errorf("audit verify: %q", out)
	}
}

// stockHost is a stock sshd with an sshward host certificate.
type stockHost struct {
	name, port string
	signedBy   string // fingerprint of the CA key that signed its certificate
}

// joinStockSSHD joins a host named name (join token, real join over
// HTTPS) and runs OpenSSH's sshd on loopback with that host certificate;
// stopped on cleanup.
func joinStockSSHD(t *testing.T, r *runner, cc *client.Client, caDir, name string) *stockHost {
	t.Helper()
	tok := strings.TrimSpace(r.ok("", "sshward-ca", "join-token", "--dir", caDir, "--host", name, "--tier", "staging"))
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cc.Join(ctx, api.JoinRequest{Token: tok, PublicKey: string(ssh.MarshalAuthorizedKey(signer.PublicKey()))})
	if err != nil {
		t.Fatal(err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	cert := pk.(*ssh.Certificate)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_key")
	if err := os.WriteFile(hostKey, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostKey+"-cert.pub", []byte(resp.Certificate), 0o644); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	conf := fmt.Sprintf("Port %s\nListenAddress 127.0.0.1\nHostKey %s\nHostCertificate %s-cert.pub\nAuthorizedKeysFile none\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nLogLevel ERROR\n", port, hostKey, hostKey)
	confPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	var log syncBuf
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", confPath)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen: %s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &stockHost{name: name, port: port, signedBy: ssh.FingerprintSHA256(cert.SignatureKey)}
}

// sshHostCheck runs stock ssh against h with only knownHosts and strict
// host key checking; ok when ssh accepted the host's certificate (user
// authentication then fails: the check is about the host).
func sshHostCheck(t *testing.T, knownHosts string, h *stockHost) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "ssh", "-v", "-F", "/dev/null", "-p", h.port,
		"-o", "HostKeyAlias="+h.name, "-o", "UserKnownHostsFile="+knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
		"-o", "ConnectTimeout=20", "nobody@127.0.0.1", "true").CombinedOutput()
	s := string(out)
	return s, strings.Contains(s, "is known and matches the ED25519-CERT host certificate")
}
