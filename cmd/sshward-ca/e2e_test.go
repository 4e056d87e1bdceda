package main_test

import (
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
	bolt "go.etcd.io/bbolt"
)

// The end-to-end tests build the real binaries once and drive them as an
// operator and an engineer would.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func bins(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "sshward-e2e-bin-")
		if buildErr != nil {
			return
		}
		args := []string{"build", "-o", binDir + "/"}
		if binTags != "" { // the PKCS#11 tests run real binaries with the driver
			args = append(args, "-tags", binTags)
		}
		out, err := exec.Command("go", append(args, "github.com/sshward/sshward/cmd/sshward-ca", "github.com/sshward/sshward/cmd/sshward")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

type runner struct {
	t   *testing.T
	env []string
}

func (r *runner) run(stdin string, name string, args ...string) result {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bins(r.t), name), args...)
	cmd.Env = append(os.Environ(), r.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	res := result{stdout: o.String(), stderr: e.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatalf("%s %v: %v", name, args, err)
	}
	return res
}

func (r *runner) ok(stdin, name string, args ...string) string {
	r.t.Helper()
	res := r.run(stdin, name, args...)
	if res.code != 0 {
		r.t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	return res.stdout
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startCA runs sshward-ca serve and waits for its ready line.
func startCA(t *testing.T, r *runner, dir, addr string, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(bins(t), "sshward-ca"), append([]string{"serve", "--dir", dir, "--listen", addr}, extra...)...)
	cmd.Env = append(os.Environ(), r.env...)
	var logBuf syncBuf
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		b := make([]byte, 4096)
		n, _ := stdout.Read(b)
		ready <- string(b[:n])
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		if !strings.Contains(line, "serving https://") {
			t.Fatalf("serve said %q; log: %s", line, logBuf.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("serve did not start; log: %s", logBuf.String())
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	return cmd
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestOperatorAndEngineerJourney(t *testing.T) {
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	home := filepath.Join(work, "home")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSHWARD_HOME=" + home, "SSH_AUTH_SOCK="}}

	// init --json: the CLI contract's fields.
	var initRes struct {
		Fingerprint string            `json:"fingerprint"`
		UserCA      map[string]string `json:"user_ca"`
		HostCA      string            `json:"host_ca"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	if len(initRes.Fingerprint) != 64 || !strings.HasPrefix(initRes.HostCA, "ssh-ed25519 ") || len(initRes.UserCA) != 3 {
		t.Fatalf("init --json: %+v", initRes)
	}
	for _, f := range []string{"keys/user-ca-production.key", "keys/host-ca.key", "policy.yaml", "config.yaml", "ca.db"} {
		fi, err := os.Stat(filepath.Join(caDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %v: secrets must be 0600", f, fi.Mode().Perm())
		}
	}
	key, _ := os.ReadFile(filepath.Join(caDir, "keys/user-ca-production.key"))
	if !bytes.Contains(key, []byte("ENCRYPTED")) {
		t.Errorf("CA key is not encrypted at rest:\n%s", key[:60])
	}
	// init refuses to overwrite.
	if res := r.run("", "sshward-ca", "init", "--dir", caDir); res.code != 1 || !strings.Contains(res.stderr, "already") {
		t.Fatalf("second init: %+v", res)
	}
	// trust lines work offline.
	if out := r.ok("", "sshward-ca", "trust", "--dir", caDir, "--tier", "production"); strings.Count(out, "ssh-ed25519") != 2 {
		t.Fatalf("production hosts trust production + break-glass, got:\n%s", out)
	}
	if out := r.ok("", "sshward-ca", "trust", "--dir", caDir, "--hosts"); !strings.HasPrefix(out, "@cert-authority * ssh-ed25519") {
		t.Fatalf("trust --hosts: %s", out)
	}

	// users add offline (no CA running).
	var alice struct {
		TOTPSecret string `json:"totp_secret"`
	}
	if err := json.Unmarshal([]byte(r.ok("alicepassword1\n", "sshward-ca", "users", "add", "alice", "--dir", caDir, "--groups", "engineers,sre", "--totp", "--password-stdin", "--json")), &alice); err != nil || alice.TOTPSecret == "" {
		t.Fatalf("users add --json: %v %+v", err, alice)
	}

	addr := freeAddr(t)
	url := "https://" + addr
	startCA(t, r, caDir, addr)

	// users add through the admin socket while serve runs.
	r.ok("bobpassword12\n", "sshward-ca", "users", "add", "bob", "--dir", caDir, "--groups", "engineers", "--password-stdin")
	if fi, err := os.Stat(filepath.Join(caDir, "admin.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v %v", err, fi)
	}
	if out := r.ok("", "sshward-ca", "users", "list", "--dir", caDir); !strings.Contains(out, "alice") || !strings.Contains(out, "bob") {
		t.Fatalf("users list: %s", out)
	}

	// Wrong fingerprint: refused, nothing written.
	res := r.run("alicepassword1\n", "sshward", "login", "--ca", url, "--fingerprint", strings.Repeat("ab", 32), "--user", "alice", "--password-stdin")
	if res.code != 1 || !strings.Contains(res.stderr, "fingerprint") {
		t.Fatalf("wrong fingerprint: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(home, "session.json")); err == nil {
		t.Fatal("a refused bootstrap wrote a session")
	}
	// Missing OTP → clear message.
	res = r.run("alicepassword1\n", "sshward", "login", "--ca", url, "--fingerprint", initRes.Fingerprint, "--user", "alice", "--password-stdin")
	if res.code != 1 || !strings.Contains(res.stderr, "TOTP") {
		t.Fatalf("login without otp: %+v", res)
	}
	code, _ := totp.GenerateCode(alice.TOTPSecret, time.Now())
	r.ok("alicepassword1\n", "sshward", "login", "--ca", url, "--fingerprint", initRes.Fingerprint, "--user", "alice", "--password-stdin", "--otp", code)
	if fi, err := os.Stat(filepath.Join(home, "session.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v %v", err, fi)
	}

	var cert struct {
		Certificate string    `json:"certificate"`
		Key         string    `json:"key"`
		Serial      uint64    `json:"serial"`
		Principals  []string  `json:"principals"`
		ValidBefore time.Time `json:"valid_before"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward", "cert", "--tier", "production", "--json")), &cert); err != nil {
		t.Fatal(err)
	}
	if cert.Serial == 0 || len(cert.Principals) != 1 || cert.Principals[0] != "alice" || time.Until(cert.ValidBefore) > 16*time.Minute {
		t.Fatalf("cert --json: %+v", cert)
	}
	for _, p := range []string{cert.Certificate, cert.Key} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", p, err, fi)
		}
	}
	// --ensure keeps a cert with more than a minute left.
	var again struct {
		Serial uint64 `json:"serial"`
	}
	json.Unmarshal([]byte(r.ok("", "sshward", "cert", "--tier", "production", "--ensure", "--json")), &again)
	if again.Serial != cert.Serial {
		t.Fatalf("--ensure fetched a new cert (%d → %d)", cert.Serial, again.Serial)
	}
	var st struct {
		User     string `json:"user"`
		MFA      bool   `json:"mfa"`
		LoggedIn bool   `json:"logged_in"`
		Certs    []struct {
			Tier   string `json:"tier"`
			Serial uint64 `json:"serial"`
		} `json:"certs"`
	}
	json.Unmarshal([]byte(r.ok("", "sshward", "status", "--json")), &st)
	if st.User != "alice" || !st.MFA || !st.LoggedIn || len(st.Certs) != 1 || st.Certs[0].Serial != cert.Serial {
		t.Fatalf("status --json: %+v", st)
	}
	cfg := r.ok("", "sshward", "ssh-config")
	for _, want := range []string{"Match host *.staging", "cert --ensure --quiet --tier staging", "--tier production", "CertificateFile " + filepath.Join(home, "keys/production-cert.pub"), "StrictHostKeyChecking yes"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("ssh-config lacks %q:\n%s", want, cfg)
		}
	}
	if kh, _ := os.ReadFile(filepath.Join(home, "known_hosts")); !bytes.HasPrefix(kh, []byte("@cert-authority * "+initRes.HostCA)) {
		t.Errorf("known_hosts: %s", kh)
	}

	// Revoke through the socket; the KRL changes.
	if out := r.ok("", "sshward-ca", "revoke", "--dir", caDir, "--serial", fmt.Sprint(cert.Serial), "--reason", "laptop lost"); !strings.Contains(out, fmt.Sprint(cert.Serial)) {
		t.Fatalf("revoke: %s", out)
	}
	if res := r.run("", "sshward-ca", "revoke", "--dir", caDir, "--serial", "abc"); res.code != 2 {
		t.Fatalf("revoke --serial abc: want usage error, got %+v", res)
	}

	// Audit: every step is there and the chain verifies.
	var events []struct {
		Type    string `json:"Type"`
		Outcome string `json:"Outcome"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", caDir, "--json")), &events); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.Type+"/"+e.Outcome] = true
	}
	for _, want := range []string{"user.add/ok", "login/refused", "login/ok", "cert.issue/ok", "revoke/ok"} {
		if !seen[want] {
			t.Errorf("audit lacks %s: %v", want, seen)
		}
	}
	if out := r.ok("", "sshward-ca", "audit", "verify", "--dir", caDir); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %s", out)
	}

	// An edited copy of the store fails verification.
	cp := filepath.Join(work, "copy.db")
	data, err := os.ReadFile(filepath.Join(caDir, "ca.db"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cp, data, 0o600)
	editAuditRecord(t, cp)
	res = r.run("", "sshward-ca", "audit", "verify", "--db", cp)
	if res.code != 1 || !strings.Contains(res.stderr, "broken") {
		t.Fatalf("verify of an edited copy: %+v", res)
	}
}

// editAuditRecord changes the actor of the second audit record in place,
// keeping its stored hash, as an attacker with file access would.
func editAuditRecord(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	edited := false
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if !strings.Contains(string(name), "audit") || edited {
				return nil
			}
			c := b.Cursor()
			c.First()
			k, v := c.Next()
			if k == nil {
				return nil
			}
			nv := bytes.Replace(v, []byte(`alice`), []byte(`mallory`), 1)
			if bytes.Equal(nv, v) {
				nv = bytes.Replace(v, []byte(`"ok"`), []byte(`"no"`), 1)
			}
			edited = !bytes.Equal(nv, v)
			return b.Put(append([]byte{}, k...), nv)
		})
	})
	if err != nil || !edited {
		t.Fatalf("could not edit an audit record (err %v)", err)
	}
}

func TestServeRefusesBadPolicy(t *testing.T) {
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123"}}
	r.ok("", "sshward-ca", "init", "--dir", caDir)
	pol, _ := os.ReadFile(filepath.Join(caDir, "policy.yaml"))
	bad := strings.Replace(string(pol), "max_ttl: 30m", "max_ttl: 5m", 1)
	if bad == string(pol) {
		t.Fatal("default policy has no 'max_ttl: 30m' to break")
	}
	os.WriteFile(filepath.Join(caDir, "policy.yaml"), []byte(bad), 0o600)
	line := 1 + strings.Count(bad[:strings.Index(bad, "max_ttl: 5m")], "\n")
	res := r.run("", "sshward-ca", "serve", "--dir", caDir, "--listen", freeAddr(t))
	if res.code != 1 || !strings.Contains(res.stderr, fmt.Sprintf("line %d", line)) || !strings.Contains(res.stderr, "max_ttl") {
		t.Fatalf("bad policy: want refusal naming line %d and max_ttl, got %+v", line, res)
	}
	// A wrong passphrase is refused without echoing it.
	r.env = []string{"SSHWARD_CA_PASSPHRASE=not-the-passphrase"}
	os.WriteFile(filepath.Join(caDir, "policy.yaml"), pol, 0o600)
	res = r.run("", "sshward-ca", "serve", "--dir", caDir, "--listen", freeAddr(t))
	if res.code != 1 || strings.Contains(res.stderr, "not-the-passphrase") || !strings.Contains(strings.ToLower(res.stderr), "passphrase") {
		t.Fatalf("wrong passphrase: %+v", res)
	}
}
