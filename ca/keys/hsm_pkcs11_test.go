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

	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/keys"
)

// softHSM is catest.SoftHSM: a fresh SoftHSM2 token "sshward".
func softHSM(t *testing.T) (base, pinFile string) { return catest.SoftHSM(t) }

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
	p := pkcs11.New(catest.SoftHSMModule)
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

// TestPKCS11RingRotateRetire: a CA key kept in a token rotates the way a
// key file does: DIR holds only NAME.uri and NAME.pub (no private
// material), Rotate makes the new key in the same token as a new object
// while the old one still opens and signs, a reload after the rotation
// signs with the new key, and Retire destroys the old key in the token.
// A pin-value URI and a pin file others can read are refused.
func TestPKCS11RingRotateRetire(t *testing.T) {
	ctx := context.Background()
	base, pinFile := softHSM(t)
	dir := t.TempDir()
	now := time.Unix(1_900_000_000, 0)
	first, err := keys.TokenKeyURI(base+"?pin-source="+pinFile, "user-ca-staging", now)
	if err != nil {
		t.Fatal(err)
	}
	k, err := keys.AddToken(ctx, keys.TokenRequest{Dir: dir, Name: "user-ca-staging", URI: first, Create: true, Comment: "staging"})
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	ring, err := keys.LoadRing(ctx, dir, "user-ca-staging", nil)
	if err != nil {
		t.Fatal(err)
	}
	oldPub := signAndVerify(t, ring.Current, dir, "old")
	ring.Current.Close()

	rotated, err := keys.Rotate(ctx, keys.RotateRequest{Dir: dir, Name: "user-ca-staging", Now: now, RetireAt: now.Add(time.Hour), Comment: "staging"})
	if err != nil {
		t.Fatal(err)
	}
	newPub := signAndVerify(t, rotated.Current, dir, "new")
	rotated.Current.Close()
	if newPub == oldPub || keys.PublicLine(rotated.Previous) != oldPub {
		t.Fatalf("rotation: new %s old %s previous %s", newPub, oldPub, keys.PublicLine(rotated.Previous))
	}
	cur, err := keys.TokenURI(dir, "user-ca-staging")
	if err != nil || !strings.Contains(cur, "object=sshward-user-ca-staging-") || strings.Contains(cur, "pin") {
		t.Fatalf("signing key uri after rotation: %q %v", cur, err)
	}
	// The old key is still in the token during the overlap.
	old, err := keys.Open(ctx, first, nil)
	if err != nil {
		t.Fatalf("the previous key no longer opens during the overlap: %v", err)
	}
	old.Close()
	reloaded, err := keys.LoadRing(ctx, dir, "user-ca-staging", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := signAndVerify(t, reloaded.Current, dir, "reloaded"); got != newPub || reloaded.Previous == nil {
		t.Fatalf("reloaded ring signs with %s (want %s), previous %v", got, newPub, reloaded.Previous)
	}
	reloaded.Current.Close()

	if _, err := keys.Retire(ctx, dir, "user-ca-staging"); err != nil {
		t.Fatal(err)
	}
	if k, err := keys.Open(ctx, first, nil); err == nil {
		k.Close()
		t.Fatal("the retired key still opens in the token")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".key") || strings.Contains(e.Name(), ".prev.") {
			t.Errorf("left in the key directory: %s", e.Name())
		}
	}

	if err := keys.CheckTokenURI(base + ";id=01;object=x?pin-value=" + catest.SoftHSMPIN); err == nil || strings.Contains(err.Error(), catest.SoftHSMPIN) {
		t.Errorf("a pin-value uri: %v", err)
	}
	if err := os.Chmod(pinFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := keys.CheckTokenURI(base + "?pin-source=" + pinFile); !errors.Is(err, keys.ErrInsecureFile) {
		t.Errorf("a pin file others can read: %v", err)
	}
}
