package playback_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/sshward/sshward/playback"
)

// TestEncryptionSettings: recordings.encryption loads recipients and
// identities; an identity file others can read is refused with one line
// that names the file and holds no key; an unknown key URI scheme and a
// missing identity are refused too.
func TestEncryptionSettings(t *testing.T) {
	dir := t.TempDir()
	k, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "recordings.key")
	if err := os.WriteFile(keyFile, []byte("# created by age-keygen\n"+k.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(yaml string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, playback.ConfigFile), []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rcpt := k.Recipient().String()
	write("recordings:\n  encryption:\n    recipients: [" + rcpt + "]\n    identity_file: " + keyFile + "\n")
	st, err := playback.LoadSettings(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Encryption == nil || len(st.Encryption.Recipients) != 1 || len(st.Encryption.Identities) != 1 {
		t.Fatalf("encryption settings: %+v", st.Encryption)
	}
	write("recordings:\n  encryption:\n    recipients: [" + rcpt + "]\n    identity: file:" + keyFile + "\n")
	if _, err := playback.LoadSettings(dir); err != nil {
		t.Fatalf("identity as a file: URI: %v", err)
	}

	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	write("recordings:\n  encryption:\n    recipients: [" + rcpt + "]\n    identity_file: " + keyFile + "\n")
	_, err = playback.LoadSettings(dir)
	if err == nil {
		t.Fatal("a 0644 identity file was accepted")
	}
	msg := err.Error()
	if !strings.Contains(msg, keyFile) || !strings.Contains(msg, "0644") || strings.Contains(msg, "\n") ||
		strings.Contains(msg, "AGE-SECRET-KEY") || strings.Contains(strings.ToUpper(msg), strings.ToUpper(k.String()[16:])) {
		t.Fatalf("refusal of a 0644 identity file: %q", msg)
	}
	os.Chmod(keyFile, 0o600)

	for _, bad := range []string{
		"recordings:\n  encryption:\n    recipients: [" + rcpt + "]\n    identity: vault:secret/rec\n",
		"recordings:\n  encryption:\n    recipients: [" + rcpt + "]\n",
		"recordings:\n  encryption:\n    recipients: [age1nope]\n    identity_file: " + keyFile + "\n",
		"recordings:\n  encryption:\n    identity_file: " + keyFile + "\n",
	} {
		write(bad)
		if _, err := playback.LoadSettings(dir); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
	// A file that is no age identity: the error names it, quotes nothing.
	os.WriteFile(keyFile, []byte("AGE-SECRET-KEY-1NOTAKEY\n"), 0o600)
	write("recordings:\n  encryption:\n    recipients: [" + rcpt + "]\n    identity_file: " + keyFile + "\n")
	if _, err := playback.LoadSettings(dir); err == nil || strings.Contains(err.Error(), "NOTAKEY") || !strings.Contains(err.Error(), keyFile) {
		t.Fatalf("a bad identity file: %v", err)
	}
}
