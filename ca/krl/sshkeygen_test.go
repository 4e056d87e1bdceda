package krl

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// These tests check our bytes against OpenSSH itself: `ssh-keygen -Q -f KRL
// KEY…` runs ssh_krl_file_contains_key, the same code sshd's RevokedKeys uses.

func sshKeygen(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Fatal("ssh-keygen not found in PATH; install openssh-client")
	}
	return p
}

func runKeygen(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(sshKeygen(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newKey makes an ed25519 key with ssh-keygen: dir/name and dir/name.pub.
func newKey(t testing.TB, dir, name string) (path string, pub ssh.PublicKey) {
	t.Helper()
	path = filepath.Join(dir, name)
	runKeygen(t, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path)
	return path, readPub(t, path+".pub")
}

func readPub(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return pub
}

// signWithKeygen signs userPub with `ssh-keygen -s` under a fresh name and
// returns the certificate's path.
func signWithKeygen(t testing.TB, dir, caPath, userPub, name, keyID string, serial uint64) string {
	t.Helper()
	b, err := os.ReadFile(userPub)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, name+".pub")
	if err := os.WriteFile(pub, b, 0o644); err != nil {
		t.Fatal(err)
	}
	runKeygen(t, "-q", "-s", caPath, "-I", keyID, "-n", "alice", "-V", "+1h", "-z", fmt.Sprint(serial), pub)
	return filepath.Join(dir, name+"-cert.pub")
}

func writeKRL(t testing.TB, dir, name string, k *KRL) string {
	t.Helper()
	b, err := k.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// keygenRevoked runs `ssh-keygen -Q -f krl key` and returns whether OpenSSH
// reports the key revoked, insisting that exit status and text agree.
func keygenRevoked(t testing.TB, krlPath, keyPath string) bool {
	t.Helper()
	out, err := exec.Command(sshKeygen(t), "-Q", "-f", krlPath, keyPath).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil && strings.HasSuffix(strings.TrimSpace(string(out)), ": ok"):
		return false
	case errors.As(err, &exit) && exit.ExitCode() == 1 && strings.Contains(string(out), ": REVOKED"):
		return true
	}
	t.Fatalf("ssh-keygen -Q %s: %v\n%s", keyPath, err, out)
	return false
}

// keygenRevokedMany checks many keys in one ssh-keygen run; the result maps
// each path to whether it was reported REVOKED.
func keygenRevokedMany(t testing.TB, krlPath string, keyPaths []string) map[string]bool {
	t.Helper()
	args := append([]string{"-Q", "-f", krlPath}, keyPaths...)
	out, err := exec.Command(sshKeygen(t), args...).Output()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		t.Fatalf("ssh-keygen -Q: %v\n%s", err, out)
	}
	got := make(map[string]bool)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		for _, p := range keyPaths {
			if strings.HasPrefix(line, p+" ") {
				got[p] = strings.HasSuffix(line, ": REVOKED")
			}
		}
	}
	if len(got) != len(keyPaths) {
		t.Fatalf("ssh-keygen -Q answered for %d of %d keys:\n%s", len(got), len(keyPaths), out)
	}
	return got
}

// writeCert signs with x/crypto (cheaper than ssh-keygen for sweeps) and
// writes the certificate in authorized_keys form.
func writeCert(t testing.TB, path string, ca ssh.Signer, key ssh.PublicKey, serial uint64, keyID string) string {
	t.Helper()
	cert := &ssh.Certificate{
		Key: key, Serial: serial, CertType: ssh.UserCert, KeyId: keyID,
		ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSSHKeygenQuery(t *testing.T) {
	dir := t.TempDir()
	ca1, ca1Pub := newKey(t, dir, "ca1")
	ca2, ca2Pub := newKey(t, dir, "ca2")
	ca3, _ := newKey(t, dir, "ca3")
	user, _ := newKey(t, dir, "user")
	lost, lostPub := newKey(t, dir, "lost")

	k := &KRL{
		Version: 42,
		Comment: "sshward test",
		CAs: []CertSection{
			{CA: ca1Pub, Serials: []uint64{100, 300, 209, 205, 207, 206, 208}, KeyIDs: []string{"mallory tier=production"}},
			{CA: ca2Pub, Serials: []uint64{7}},
			{KeyIDs: []string{"eve@wild"}},
		},
		Keys: []ssh.PublicKey{lostPub},
	}
	krlPath := writeKRL(t, dir, "revoked.krl", k)
	emptyPath := writeKRL(t, dir, "empty.krl", &KRL{})

	sign := func(ca, name, keyID string, serial uint64) string {
		return signWithKeygen(t, dir, ca, user+".pub", name, keyID, serial)
	}
	tests := []struct {
		name string
		key  string
		want bool
	}{
		{"listed serial", sign(ca1, "c100", "alice", 100), true},
		{"other listed serial", sign(ca1, "c300", "alice", 300), true},
		{"unlisted serial", sign(ca1, "c101", "alice", 101), false},
		{"before range", sign(ca1, "c204", "alice", 204), false},
		{"range start", sign(ca1, "c205", "alice", 205), true},
		{"inside range", sign(ca1, "c207", "alice", 207), true},
		{"range end", sign(ca1, "c209", "alice", 209), true},
		{"after range", sign(ca1, "c210", "alice", 210), false},
		{"key ID", sign(ca1, "cmallory", "mallory tier=production", 55), true},
		{"key ID prefix only", sign(ca1, "cmallory2", "mallory", 56), false},
		{"serial 0 with revoked key ID", sign(ca1, "czero", "mallory tier=production", 0), true},
		{"serial 0", sign(ca1, "czero2", "alice", 0), false},
		{"second CA serial", sign(ca2, "ca2c7", "alice", 7), true},
		{"same serial, different CA", sign(ca2, "ca2c100", "alice", 100), false},
		{"key ID revoked for another CA only", sign(ca2, "ca2mallory", "mallory tier=production", 8), false},
		{"any-CA key ID", sign(ca3, "ca3eve", "eve@wild", 1), true},
		{"CA without a section", sign(ca3, "ca3c100", "alice", 100), false},
		{"revoked plain key", lost + ".pub", true},
		{"certificate of revoked plain key", signWithKeygen(t, dir, ca3, lost+".pub", "lostcert", "alice", 9), true},
		{"other plain key", user + ".pub", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keygenRevoked(t, krlPath, tt.key); got != tt.want {
				t.Fatalf("ssh-keygen -Q: revoked=%v, want %v", got, tt.want)
			}
			if got := k.IsRevoked(readPub(t, tt.key)); got != tt.want {
				t.Fatalf("IsRevoked = %v, want %v (disagrees with ssh-keygen)", got, tt.want)
			}
			if keygenRevoked(t, emptyPath, tt.key) {
				t.Fatalf("empty KRL revokes %s", tt.key)
			}
		})
	}

	t.Run("ssh-keygen lists the contents", func(t *testing.T) {
		out := runKeygen(t, "-Q", "-l", "-f", krlPath)
		for _, want := range []string{
			"# KRL version 42", "# Comment: sshward test",
			"serial: 100\n", "serial: 205-209\n", "serial: 300\n", "id: mallory tier=production\n",
			"serial: 7\n", "# Wildcard CA\nid: eve@wild\n", "hash: SHA256:",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("ssh-keygen -Q -l output lacks %q:\n%s", want, out)
			}
		}
	})
}

// TestMarshalMatchesSSHKeygen builds the same revocations with `ssh-keygen -k`
// and with Marshal and expects identical bytes. Only sparse serials are used:
// for dense ones ssh-keygen picks bitmaps, which Marshal never writes.
func TestMarshalMatchesSSHKeygen(t *testing.T) {
	dir := t.TempDir()
	_, ca1Pub := newKey(t, dir, "ca1")
	_, ca2Pub := newKey(t, dir, "ca2")
	u1, u1Pub := newKey(t, dir, "u1")
	u2, u2Pub := newKey(t, dir, "u2")
	krlPath := filepath.Join(dir, "keygen.krl")

	spec := func(name string, lines ...string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pubLine := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	runKeygen(t, "-k", "-z", "42", "-f", krlPath, "-s", filepath.Join(dir, "ca1.pub"),
		spec("s1", "serial: 90000", "serial: 1000", "id: b-id", "serial: 5000", "id: a-id"))
	runKeygen(t, "-k", "-u", "-z", "42", "-f", krlPath, "-s", filepath.Join(dir, "ca2.pub"), spec("s2", "serial: 77"))
	runKeygen(t, "-k", "-u", "-z", "42", "-f", krlPath, "-s", "none", spec("s3", "id: wild"))
	runKeygen(t, "-k", "-u", "-z", "42", "-f", krlPath,
		spec("s4", "sha256: "+pubLine(u2+".pub"), "sha256: "+pubLine(u1+".pub")))
	want, err := os.ReadFile(krlPath)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := Parse(want)
	if err != nil {
		t.Fatalf("Parse(ssh-keygen output): %v", err)
	}

	k := &KRL{
		Version:     42,
		GeneratedAt: parsed.GeneratedAt, // ssh-keygen stamps its own clock
		CAs: []CertSection{
			{CA: ca1Pub, Serials: []uint64{5000, 1000, 90000}, KeyIDs: []string{"b-id", "a-id"}},
			{CA: ca2Pub, Serials: []uint64{77}},
			{KeyIDs: []string{"wild"}},
		},
		Keys: []ssh.PublicKey{u1Pub, u2Pub},
	}
	got, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal differs from ssh-keygen -k:\n got %x\nwant %x", got, want)
	}
}

// TestParseSSHKeygenKRL reads a KRL that ssh-keygen wrote with bitmaps,
// ranges, explicit keys and hashes, and checks that IsRevoked on the parsed
// value agrees with `ssh-keygen -Q` for every serial around the edges.
func TestParseSSHKeygenKRL(t *testing.T) {
	dir := t.TempDir()
	ca1, _ := newKey(t, dir, "ca1")
	_, user := newKey(t, dir, "user")
	explicit, explicitPub := newKey(t, dir, "explicit")
	krlPath := filepath.Join(dir, "keygen.krl")
	specPath := filepath.Join(dir, "spec")
	spec := "serial: 1-5\nserial: 7\nserial: 9\nserial: 12\nserial: 100-300\nserial: 1000000\n" +
		"id: mallory\nkey: " + mustRead(t, explicit+".pub")
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	runKeygen(t, "-k", "-z", "3", "-f", krlPath, "-s", ca1+".pub", specPath)
	b, err := os.ReadFile(krlPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte{certSerialBitmap}) {
		t.Fatalf("fixture has no bitmap section; the test no longer covers bitmaps")
	}
	k, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(ssh-keygen output): %v", err)
	}
	if len(k.CAs) != 1 || !reflectEqualSerials(k.CAs[0], []uint64{7, 9, 12, 1000000}, []SerialRange{{1, 5}, {100, 300}}) ||
		len(k.CAs[0].KeyIDs) != 1 || k.CAs[0].KeyIDs[0] != "mallory" || len(k.KeySHA256) != 1 || k.KeySHA256[0] != hashOf(explicitPub) {
		t.Fatalf("Parse = %+v", viewOf(k))
	}

	caSigner := loadSigner(t, ca1)
	var paths []string
	want := make(map[string]bool)
	for _, serial := range []uint64{0, 1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 99, 100, 200, 300, 301, 999999, 1000000, 1000001} {
		p := writeCert(t, filepath.Join(dir, fmt.Sprintf("c%d.pub", serial)), caSigner, user, serial, "alice")
		paths = append(paths, p)
		want[p] = k.IsRevoked(readPub(t, p))
	}
	p := writeCert(t, filepath.Join(dir, "mallory.pub"), caSigner, user, 50, "mallory")
	paths, want[p] = append(paths, p), k.IsRevoked(readPub(t, p))
	paths, want[explicit+".pub"] = append(paths, explicit+".pub"), k.IsRevoked(explicitPub)

	got := keygenRevokedMany(t, krlPath, paths)
	revoked := 0
	for _, p := range paths {
		if got[p] != want[p] {
			t.Errorf("%s: ssh-keygen revoked=%v, IsRevoked=%v", filepath.Base(p), got[p], want[p])
		}
		if got[p] {
			revoked++
		}
	}
	if revoked != 11 {
		t.Errorf("ssh-keygen reports %d revoked, want 11 (fixture changed?)", revoked)
	}
}

func reflectEqualSerials(s CertSection, serials []uint64, ranges []SerialRange) bool {
	return fmt.Sprint(s.Serials) == fmt.Sprint(serials) && fmt.Sprint(s.Ranges) == fmt.Sprint(ranges)
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func loadSigner(t testing.TB, path string) ssh.Signer {
	t.Helper()
	s, err := ssh.ParsePrivateKey([]byte(mustRead(t, path)))
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	return s
}
