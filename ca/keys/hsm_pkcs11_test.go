//go:build pkcs11 && cgo

package keys_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/keys"
)

// softHSMModule is Debian's SoftHSM2 (package softhsm2, installed by
// make deps): a real PKCS#11 module; its token files stand for the hardware.
const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// softHSM inits a token "sshward" in a temp dir of its own (SOFTHSM2_CONF)
// and returns the base key URI (module, token, pin-source) and the PIN.
func softHSM(t *testing.T) (base, pin string) {
	t.Helper()
	if _, err := os.Stat(softHSMModule); err != nil {
		t.Fatal("SoftHSM2 not found: install softhsm2 (make deps)")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	pin = "5678-hsm-pin"
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "sshward", "--so-pin", "so-1234-pin", "--pin", pin).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(pin), 0o600); err != nil {
		t.Fatal(err)
	}
	return "pkcs11:module-path=" + softHSMModule + ";token=sshward", pinFile
}

// TestPKCS11KeyInSoftHSM: sshward's key code makes a CA key inside a real
// PKCS#11 token (SoftHSM2), signs an SSH certificate with it that
// ssh-keygen verifies against the key's public half, and rotates to a
// second key made in the same token while the first one still signs
// (overlap). Both private keys are CKA_SENSITIVE, not CKA_EXTRACTABLE and
// CKA_NEVER_EXTRACTABLE, reading their CKA_VALUE is refused by the module,
// and the CA's data directory never holds private key material. A key that
// exists is not made again, and no URI shown in errors or String carries
// the PIN.
func TestPKCS11KeyInSoftHSM(t *testing.T) {
	ctx := context.Background()
	base, pinFile := softHSM(t)
	dataDir := t.TempDir()
	uriOf := func(id, object string) string {
		return base + ";id=" + id + ";object=" + object + "?pin-source=" + pinFile
	}

	first, err := keys.CreateInToken(ctx, uriOf("01", "host-ca"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if strings.Contains(first.String(), "pin") {
		t.Errorf("the key's String shows the pin source: %s", first)
	}
	if _, err := keys.CreateInToken(ctx, uriOf("01", "host-ca")); err == nil {
		t.Fatal("a second key with the same id and label was made")
	}
	// Reopened by URI in a new session (what sshward-ca serve does).
	reopened, err := keys.Open(ctx, uriOf("01", "host-ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	pubLine := signAndVerify(t, reopened, dataDir, "one")

	// Rotation: a new key in the token; the old one still signs until it retires.
	second, err := keys.CreateInToken(ctx, uriOf("02", "host-ca-2"))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if pub2 := signAndVerify(t, second, dataDir, "two"); pub2 == pubLine {
		t.Fatal("the rotated key is the same key")
	}
	signAndVerify(t, first, dataDir, "three")

	// Never extractable, checked on the module itself.
	p := pkcs11.New(softHSMModule)
	if p == nil {
		t.Fatal("load the module")
	}
	// The Keys above share the module in this process: it is initialised.
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatal(err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) == 0 {
		t.Fatalf("slots: %v %v", slots, err)
	}
	var sess pkcs11.SessionHandle
	found := false
	for _, slot := range slots {
		ti, err := p.GetTokenInfo(slot)
		if err != nil || ti.Label != "sshward" {
			continue
		}
		if sess, err = p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION); err != nil {
			t.Fatal(err)
		}
		found = true
		break
	}
	if !found {
		t.Fatal("token sshward not found")
	}
	defer p.CloseSession(sess)
	pin, _ := os.ReadFile(pinFile)
	if err := p.Login(sess, pkcs11.CKU_USER, string(pin)); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		t.Fatal(err)
	}
	if err := p.FindObjectsInit(sess, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)}); err != nil {
		t.Fatal(err)
	}
	objs, _, err := p.FindObjects(sess, 10)
	p.FindObjectsFinal(sess)
	if err != nil || len(objs) != 2 {
		t.Fatalf("private keys in the token: %d %v", len(objs), err)
	}
	for _, o := range objs {
		attrs, err := p.GetAttributeValue(sess, o, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
		})
		if err != nil {
			t.Fatal(err)
		}
		label := string(attrs[0].Value)
		if !isTrue(attrs[1].Value) || isTrue(attrs[2].Value) || !isTrue(attrs[3].Value) {
			t.Errorf("%s: sensitive %v extractable %v never-extractable %v", label, attrs[1].Value, attrs[2].Value, attrs[3].Value)
		}
		// The attacker's means with the PIN: ask the module for the value.
		if v, err := p.GetAttributeValue(sess, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil && len(v) > 0 && len(v[0].Value) > 0 {
			t.Errorf("%s: the module gave out the private value", label)
		} else if e, ok := err.(pkcs11.Error); ok && e != pkcs11.CKR_ATTRIBUTE_SENSITIVE {
			t.Errorf("%s: reading CKA_VALUE: %v, want CKR_ATTRIBUTE_SENSITIVE", label, err)
		}
	}

	// Nothing private in the CA's data directory.
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte("PRIVATE KEY")) || strings.HasSuffix(path, ".key") {
			t.Errorf("%s holds private key material", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPKCS11WrongPINAndMissingKey: a wrong PIN and a key that is not in
// the token fail to open, and the error shows neither the PIN nor its file.
func TestPKCS11WrongPINAndMissingKey(t *testing.T) {
	ctx := context.Background()
	base, pinFile := softHSM(t)
	k, err := keys.CreateInToken(ctx, base+";id=01;object=ca?pin-source="+pinFile)
	if err != nil {
		t.Fatal(err)
	}
	// A PKCS#11 login holds for the whole process while a session is
	// open: close it, or the wrong PIN below would ride on it.
	k.Close()
	_, err = keys.Open(ctx, base+";id=01;object=ca?pin-value=wrong-pin-0000", nil)
	if err == nil {
		t.Fatal("a wrong PIN opened the key")
	}
	if strings.Contains(err.Error(), "wrong-pin-0000") {
		t.Errorf("the error shows the PIN: %v", err)
	}
	_, err = keys.Open(ctx, base+";id=09;object=absent?pin-source="+pinFile, nil)
	if err == nil {
		t.Fatal("a key that is not in the token opened")
	}
	if strings.Contains(err.Error(), pinFile) {
		t.Errorf("the error shows the pin file: %v", err)
	}
	if errors.Is(err, keys.ErrUnsupportedKMS) {
		t.Errorf("this build has the pkcs11 driver: %v", err)
	}
}

func isTrue(v []byte) bool { return len(v) == 1 && v[0] == 1 }

// signAndVerify signs a user certificate with k and checks it with
// ssh-keygen against k's public half; it returns that public line.
func signAndVerify(t *testing.T, k *keys.Key, dir, name string) string {
	t.Helper()
	s, err := k.SSHSigner()
	if err != nil {
		t.Fatal(err)
	}
	userPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	userKey, err := ssh.NewPublicKey(userPub)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert := &ssh.Certificate{Key: userKey, Serial: 7, CertType: ssh.UserCert, KeyId: "hsm " + name, ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, s); err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, name+"-cert.pub")
	pubLine := keys.PublicLine(s.PublicKey())
	if err := os.WriteFile(certFile, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	// ssh-keygen checks a certificate's signature when it loads it
	// (sshkey cert_parse): -L fails on a bad one.
	out, err := exec.Command("ssh-keygen", "-L", "-f", certFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Signing CA: ECDSA "+ssh.FingerprintSHA256(s.PublicKey())) {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
	}
	return pubLine
}
