package playback_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/objstore/s3test"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder/atrest"
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

// TestArchiveEncrypted: with recordings.encryption, every object the
// server puts in a real S3-compatible bucket (versitygw) is an age stream
// holding no session text; a fresh replica with the identity rebuilds from
// the bucket (Reindex: digest and signature checked over the plaintext) and
// serves the same cast, stored encrypted again; one without it imports
// nothing readable.
func TestArchiveEncrypted(t *testing.T) {
	s3 := s3test.Start(t)
	bucket := openBucket(t, s3)
	k, _ := age.GenerateX25519Identity()
	keys := &atrest.Keys{Recipients: []age.Recipient{k.Recipient()}, Identities: []age.Identity{k}}
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{objects: bucket, keys: keys})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, srv.url, agentOpts{})
	a.clock.set(time.Now())
	rec := a.create(t, "s-sealed", "staging", false)
	writeOutput(t, a, rec, 0, 200)
	closeRec(t, rec)
	cast := w.shipped(t, a, srv.url, "s-sealed")
	waitFor(t, "the recording in the bucket", 15*time.Second, func() bool {
		_, err := objectBytes(t, bucket, "records/s-sealed.json")
		return err == nil
	})
	for _, key := range []string{"casts/s-sealed.cast", "records/s-sealed.json"} {
		raw, err := objectBytes(t, bucket, key)
		if err != nil || !bytes.HasPrefix(raw, []byte("age-encryption.org/v1\n")) || bytes.Contains(raw, []byte("output line")) ||
			bytes.Contains(raw, []byte("s-sealed")) {
			t.Fatalf("object %s is not an age stream free of session text (%v): %.60q", key, err, raw)
		}
	}

	dir := t.TempDir()
	fresh, err := store.Open(context.Background(), store.Config{Dir: dir, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	res, err := playback.Reindex(context.Background(), fresh, playback.EncryptObjects(bucket, keys), nil)
	if err != nil || res.Imported != 1 {
		t.Fatalf("Reindex from the encrypted bucket: %+v %v", res, err)
	}
	f, err := fresh.OpenCast("s-sealed")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, cast) {
		t.Fatal("the rebuilt cast differs")
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, "blobs", "s-sealed.cast")); !bytes.HasPrefix(raw, []byte(atrest.Magic)) {
		t.Fatal("the rebuilt cast is stored in plaintext")
	}

	// Another key: nothing to import, no crash.
	other, _ := age.GenerateX25519Identity()
	okeys := &atrest.Keys{Recipients: []age.Recipient{other.Recipient()}, Identities: []age.Identity{other}}
	wrong, err := store.Open(context.Background(), store.Config{Dir: t.TempDir(), Keys: okeys})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if res, _ := playback.Reindex(context.Background(), wrong, playback.EncryptObjects(bucket, okeys), nil); res.Imported != 0 {
		t.Fatalf("a replica without the identity imported %+v", res)
	}
}
