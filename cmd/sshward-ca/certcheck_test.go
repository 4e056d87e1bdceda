package main_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/catest"
)

// Helpers of the key tests (hsm_e2e_test.go, keysync_e2e_test.go): user
// certificates from the real CA checked with stock ssh-keygen and sshd.

// certFiles is a user key and its certificate on disk, for stock ssh.
type certFiles struct{ key, cert string }

// userCert asks the CA (HTTPS, as bench) for a staging certificate of a
// new ed25519 key and writes both for ssh -i / CertificateFile.
func userCert(t *testing.T, is *issuer, dir, name string) certFiles {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	line, err := is.certFor(sp)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	f := certFiles{key: filepath.Join(dir, name), cert: filepath.Join(dir, name+"-cert.pub")}
	if err := os.WriteFile(f.key, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.cert, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// signingCA is the CA fingerprint stock ssh-keygen -L reads from a
// certificate (it checks the signature when it loads one).
func signingCA(t *testing.T, certPath string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-L", "-f", certPath).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 4 && f[0] == "Signing" && f[1] == "CA:" {
			return f[3]
		}
	}
	t.Fatalf("ssh-keygen -L shows no signing CA:\n%s", out)
	return ""
}

func lineFingerprint(t *testing.T, line string) string {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(k)
}

// sshdLogin starts a stock sshd trusting the user CA lines and logs in as
// login with c; it fails the test unless the outcome is want.
func sshdLogin(t *testing.T, trusted []string, login string, c certFiles, want bool) {
	t.Helper()
	// trust's "(previous, retires …)" comments are comments to sshd.
	d := catest.StartSSHD(t, catest.SSHDConfig{TrustedUserCAKeys: trusted, Principals: map[string][]string{login: {"bench"}}})
	out, err := catest.SSH(context.Background(), d.Addr, login, c.key, c.cert, nil, "echo", "in-"+filepath.Base(c.key))
	if ok := err == nil && strings.Contains(out, "in-"+filepath.Base(c.key)); ok != want {
		t.Fatalf("stock ssh login with %s: accepted=%v, want %v\n%s\nsshd: %s", filepath.Base(c.cert), ok, want, out, d.Log())
	}
}

// certFor returns the certificate line of a staging certificate for sp.
func (is *issuer) certFor(sp ssh.PublicKey) (string, error) {
	_, status, body, err := is.issueFor(sp)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("cert: %d %s", status, body)
	}
	var cr struct {
		Certificate string `json:"certificate"`
	}
	if err := json.Unmarshal([]byte(body), &cr); err != nil {
		return "", err
	}
	return strings.TrimSpace(cr.Certificate), nil
}
