package catest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// SoftHSMModule is Debian's SoftHSM2 (package softhsm2, installed by make
// deps): a real PKCS#11 module; its token files stand for the hardware.
const SoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// SoftHSMPIN is the user PIN of the token SoftHSM makes.
const SoftHSMPIN = "5678-hsm-pin"

// SoftHSM inits a token "sshward" in a temp dir of its own (SOFTHSM2_CONF,
// set for this process and the processes it starts) and returns the base
// key URI (module and token, no PIN) and the PIN file (0600).
func SoftHSM(t testing.TB) (base, pinFile string) {
	t.Helper()
	if _, err := os.Stat(SoftHSMModule); err != nil {
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
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "sshward", "--so-pin", "so-1234-pin", "--pin", SoftHSMPIN).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	pinFile = filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(SoftHSMPIN), 0o600); err != nil {
		t.Fatal(err)
	}
	return "pkcs11:module-path=" + SoftHSMModule + ";token=sshward", pinFile
}
