package catest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDPath is where Debian's openssh-server puts sshd.
const SSHDPath = "/usr/sbin/sshd"

// SSHDConfig configures a stock OpenSSH sshd.
type SSHDConfig struct {
	// TrustedUserCAKeys are authorized_keys lines of the user CAs to trust.
	TrustedUserCAKeys []string
	// RevokedKeys is a KRL file path ("" = none).
	RevokedKeys string
	// Principals maps a local login to the certificate principals it accepts
	// (AuthorizedPrincipalsFile), so tests can log in as the current user
	// with principals like "deploy" or "alice".
	Principals map[string][]string
	// HostCert, HostKey: a CA-signed host key (optional; else a plain key).
	HostKeyPEM  []byte
	HostCertPub []byte
}

// SSHD is a running sshd.
type SSHD struct {
	Addr string
	Dir  string
	cmd  *exec.Cmd
	log  *syncBuffer
}

// NeedOpenSSH fails the test (not skip: make test installs them) when the
// OpenSSH programs are missing.
func NeedOpenSSH(t testing.TB) {
	t.Helper()
	for _, p := range []string{SSHDPath, "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not installed: apt-get install openssh-client openssh-server (make test does this)", p)
		}
	}
}

// StartSSHD starts sshd -D on a free loopback port; stopped on cleanup.
func StartSSHD(t testing.TB, c SSHDConfig) *SSHD {
	t.Helper()
	NeedOpenSSH(t)
	dir := t.TempDir()
	os.MkdirAll("/run/sshd", 0o755) // privilege separation dir (no systemd here)
	hostKey := filepath.Join(dir, "host_key")
	if c.HostKeyPEM != nil {
		mustWrite(t, hostKey, c.HostKeyPEM, 0o600)
	} else {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		blk, err := ssh.MarshalPrivateKey(priv, "sshd test host key")
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, hostKey, pem.EncodeToMemory(blk), 0o600)
	}
	cas := filepath.Join(dir, "trusted_user_ca_keys")
	mustWrite(t, cas, []byte(strings.Join(c.TrustedUserCAKeys, "\n")+"\n"), 0o644)
	princDir := filepath.Join(dir, "principals")
	os.MkdirAll(princDir, 0o755)
	for user, ps := range c.Principals {
		mustWrite(t, filepath.Join(princDir, user), []byte(strings.Join(ps, "\n")+"\n"), 0o644)
	}
	port := freePort(t)
	var cfg bytes.Buffer
	fmt.Fprintf(&cfg, "Port %d\nListenAddress 127.0.0.1\nHostKey %s\n", port, hostKey)
	if c.HostCertPub != nil {
		p := hostKey + "-cert.pub"
		mustWrite(t, p, c.HostCertPub, 0o644)
		fmt.Fprintf(&cfg, "HostCertificate %s\n", p)
	}
	fmt.Fprintf(&cfg, "TrustedUserCAKeys %s\nAuthorizedPrincipalsFile %s/%%u\n", cas, princDir)
	if c.RevokedKeys != "" {
		fmt.Fprintf(&cfg, "RevokedKeys %s\n", c.RevokedKeys)
	}
	cfg.WriteString("AuthorizedKeysFile none\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n" +
		"PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPidFile none\nLogLevel VERBOSE\nMaxStartups 100:30:200\n")
	cfgPath := filepath.Join(dir, "sshd_config")
	mustWrite(t, cfgPath, cfg.Bytes(), 0o644)
	s := &SSHD{Addr: fmt.Sprintf("127.0.0.1:%d", port), Dir: dir, log: &syncBuffer{}}
	s.cmd = exec.Command(SSHDPath, "-D", "-e", "-f", cfgPath)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not start: %s", s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// Log returns what sshd logged so far.
func (s *SSHD) Log() string { return s.log.String() }

// Port returns the port as a string.
func (s *SSHD) Port() string {
	_, p, _ := net.SplitHostPort(s.Addr)
	return p
}

// SSH runs the stock ssh client with a key and certificate and returns its
// combined output.
func SSH(ctx context.Context, addr, user, keyPath, certPath string, extra []string, command ...string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-i", keyPath, "-p", port}
	if certPath != "" {
		args = append(args, "-o", "CertificateFile="+certPath)
	}
	args = append(args, extra...)
	args = append(args, user+"@"+host)
	args = append(args, command...)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", args...).CombinedOutput()
	return string(out), err
}

// CurrentUser is the login name the tests run as.
func CurrentUser(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("id", "-un").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func mustWrite(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
