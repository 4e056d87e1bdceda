package keys

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// testCert is a user certificate shaped like the ones the CA issues.
func testCert(tb testing.TB, now time.Time) *ssh.Certificate {
	tb.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return &ssh.Certificate{
		Key:             sshPub,
		Serial:          0x1234_5678_9abc_def0,
		CertType:        ssh.UserCert,
		KeyId:           "alice@local tier=staging req=- serial=1311768467463790320",
		ValidPrincipals: []string{"alice", "deploy"},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "tier@sshward": "staging",
		}},
	}
}

// A certificate signed through a keys.Key is accepted by OpenSSH's own parser
// and by x/crypto's CertChecker, and both name our CA key as the signer.
func TestSSHCertSignedByKey(t *testing.T) {
	k := fixture(t)
	ca, err := k.SSHSigner()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert := testCert(t, now)
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatalf("SignCert: %v", err)
	}

	t.Run("ssh-keygen -L", func(t *testing.T) {
		keygen, err := exec.LookPath("ssh-keygen")
		if err != nil {
			t.Fatal("ssh-keygen not found: install openssh-client")
		}
		path := filepath.Join(t.TempDir(), "id-cert.pub")
		if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(keygen, "-L", "-f", path).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
		}
		for _, want := range []string{
			"Type: ssh-ed25519-cert-v01@openssh.com user certificate",
			"Signing CA: ED25519 " + ssh.FingerprintSHA256(ca.PublicKey()),
			`Key ID: "` + cert.KeyId + `"`,
			"Serial: 1311768467463790320",
			"alice\n", "deploy\n", "permit-pty",
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("ssh-keygen -L output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("CertChecker", func(t *testing.T) {
		checker := &ssh.CertChecker{
			IsUserAuthority: func(auth ssh.PublicKey) bool {
				return bytes.Equal(auth.Marshal(), ca.PublicKey().Marshal())
			},
			Clock: func() time.Time { return now },
		}
		if !checker.IsUserAuthority(cert.SignatureKey) {
			t.Fatal("cert is not signed by our CA key")
		}
		if err := checker.CheckCert("alice", cert); err != nil {
			t.Fatalf("CheckCert: %v", err)
		}
		// The checker is not vacuous: a changed field breaks the signature.
		tampered := *cert
		tampered.ValidPrincipals = []string{"alice", "root"}
		if err := checker.CheckCert("root", &tampered); err == nil {
			t.Fatal("CheckCert accepted a tampered certificate")
		}
	})
}

// The design target: signing through softkms costs within 10% of signing
// with a raw key through ssh.NewSignerFromKey. Both benchmarks run the same
// loop; only the signer differs.
func BenchmarkSignCertSoftKMS(b *testing.B) {
	signer, err := fixture(b).SSHSigner()
	if err != nil {
		b.Fatal(err)
	}
	benchmarkSignCert(b, signer)
}

func BenchmarkSignCertRaw(b *testing.B) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	benchmarkSignCert(b, signer)
}

func benchmarkSignCert(b *testing.B, ca ssh.Signer) {
	tmpl := testCert(b, time.Now())
	b.ReportAllocs()
	for b.Loop() {
		cert := *tmpl
		if err := cert.SignCert(rand.Reader, ca); err != nil {
			b.Fatal(err)
		}
	}
}

// The reason BenchmarkSignCertSoftKMS matches BenchmarkSignCertRaw: softkms
// hands back the parsed key itself, not a wrapper, so the ssh.Signer takes the
// raw-key path. If a go.step.sm/crypto upgrade starts wrapping it, this fails
// before the benchmark drifts.
func TestSoftKeyIsUnwrapped(t *testing.T) {
	if _, ok := fixture(t).Signer().(ed25519.PrivateKey); !ok {
		t.Fatalf("softkms signer is %T, want ed25519.PrivateKey", fixture(t).Signer())
	}
}
