//go:build !pkcs11

package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitKMSNeedsPKCS11Build: the default build (softkms only, no cgo)
// refuses init --kms with a pkcs11 URI, saying how to build one that can,
// and leaves no CA behind.
func TestInitKMSNeedsPKCS11Build(t *testing.T) {
	work := t.TempDir()
	pin := filepath.Join(work, "pin")
	if err := os.WriteFile(pin, []byte("1234"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=default-build-pass-1"}}
	caDir := filepath.Join(work, "ca")
	res := r.run("", "sshward-ca", "init", "--dir", caDir, "--kms", "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=sshward?pin-source="+pin)
	if res.code == 0 || !strings.Contains(res.stderr, "unsupported kms") || !strings.Contains(res.stderr, "build with -tags pkcs11") {
		t.Fatalf("init --kms in the default build: %d %q", res.code, res.stderr)
	}
	if _, err := os.Stat(filepath.Join(caDir, "config.yaml")); !os.IsNotExist(err) {
		t.Fatalf("a CA was left behind: %v", err)
	}
}
