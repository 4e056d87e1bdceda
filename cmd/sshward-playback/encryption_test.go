package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

// TestServeRefusesReadableIdentityFile: sshward-playback serve with
// recordings.encryption naming an identity file group and others can read
// (0644) refuses to start, before it joins the CA, with one line that names the file and the mode,
// and prints no key, neither in the error nor on stderr.
func TestServeRefusesReadableIdentityFile(t *testing.T) {
	dir := t.TempDir()
	k, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "recordings.key")
	if err := os.WriteFile(keyFile, []byte(k.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := "recordings:\n  encryption:\n    recipients: [" + k.Recipient().String() + "]\n    identity_file: " + keyFile + "\n"
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"serve", "--dir", dir}, &stdout, &stderr)
	if err == nil {
		t.Fatal("serve started with a 0644 identity file")
	}
	msg := err.Error()
	secret := strings.TrimPrefix(k.String(), "AGE-SECRET-KEY-1")
	if !strings.HasPrefix(msg, "refusing to start") || !strings.Contains(msg, keyFile) || !strings.Contains(msg, "0644") ||
		strings.Contains(msg, "\n") || strings.Contains(msg+stderr.String()+stdout.String(), secret[:20]) {
		t.Fatalf("refusal: %q (stderr %q)", msg, stderr.String())
	}
	// Refused before anything else: no join was tried (it would have
	// failed on the missing --ca first), no key of its own was made.
	if _, err := os.Stat(filepath.Join(dir, "tls.key")); err == nil {
		t.Fatal("the server made its key before refusing")
	}
}
