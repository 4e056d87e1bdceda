package main_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupWhileServingAndRestore: an operator backs up a CA that is
// serving (the snapshot comes through its admin socket, consistent, with
// its own audit record), keeps changing it, then restores the backup into
// a fresh directory: the audit chain verifies, the state is the one at the
// backup, and the restored CA serves. The refusals: a wrong passphrase, a
// tampered file, a non-empty target, an existing backup file; and the
// file holds no plaintext.
func TestBackupWhileServingAndRestore(t *testing.T) {
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=backup-passphrase-42", "SSHWARD_HOME=" + filepath.Join(work, "home")}}
	r.ok("", "sshward-ca", "init", "--dir", caDir)
	r.ok("password-alice-1\n", "sshward-ca", "users", "add", "alice", "--groups", "engineers", "--password-stdin", "--dir", caDir)
	ca := startCA(t, r, caDir, freeAddr(t))
	r.ok("password-bob-12\n", "sshward-ca", "users", "add", "bob", "--groups", "sre", "--password-stdin", "--dir", caDir)

	backup := filepath.Join(work, "ca.backup")
	out := r.ok("", "sshward-ca", "backup", "--dir", caDir, "--to", backup)
	if !strings.Contains(out, "backup written: "+backup) || !strings.Contains(out, "audit chain: 3 records") {
		t.Fatalf("backup said %q", out)
	}
	r.ok("password-carol-1\n", "sshward-ca", "users", "add", "carol", "--groups", "sre", "--password-stdin", "--dir", caDir) // after the backup

	fi, err := os.Stat(backup)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	data, _ := os.ReadFile(backup)
	for _, plain := range []string{"alice", "bob", "engineers", "BEGIN", "user.add"} {
		if bytes.Contains(data, []byte(plain)) {
			t.Errorf("the backup file shows %q in clear", plain)
		}
	}
	if res := r.run("", "sshward-ca", "backup", "--dir", caDir, "--to", backup); res.code != 1 || !strings.Contains(res.stderr, "exists") {
		t.Errorf("backup over an existing file: %d %q", res.code, res.stderr)
	}
	ca.Process.Signal(os.Interrupt)
	ca.Wait()

	// Refusals first: nothing may appear at the target.
	wrong := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=not-the-passphrase"}}
	target := filepath.Join(work, "restored")
	if res := wrong.run("", "sshward-ca", "restore", "--from", backup, "--dir", target); res.code != 1 || !strings.Contains(res.stderr, "does not open with this passphrase") {
		t.Errorf("restore with a wrong passphrase: %d %q", res.code, res.stderr)
	}
	tampered := filepath.Join(work, "tampered.backup")
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0x01
	os.WriteFile(tampered, bad, 0o600)
	if res := r.run("", "sshward-ca", "restore", "--from", tampered, "--dir", target); res.code != 1 || !strings.Contains(res.stderr, "nothing was restored") {
		t.Errorf("restore of a tampered backup: %d %q", res.code, res.stderr)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s: %v", target, err)
	}
	if res := r.run("", "sshward-ca", "restore", "--from", backup, "--dir", caDir); res.code != 1 || !strings.Contains(res.stderr, "not empty") {
		t.Errorf("restore over a CA: %d %q", res.code, res.stderr)
	}

	out = r.ok("", "sshward-ca", "restore", "--from", backup, "--dir", target)
	if !strings.Contains(out, "audit chain intact: 3 records") {
		t.Fatalf("restore said %q", out)
	}
	if out := r.ok("", "sshward-ca", "audit", "verify", "--dir", target); !strings.Contains(out, "audit chain intact: 3 records") {
		t.Errorf("audit verify of the restored CA: %q", out)
	}
	users := r.ok("", "sshward-ca", "users", "list", "--dir", target)
	if !strings.Contains(users, "alice") || !strings.Contains(users, "bob") || strings.Contains(users, "carol") {
		t.Errorf("restored users (want alice and bob, not carol who came after the backup):\n%s", users)
	}
	events := r.ok("", "sshward-ca", "audit", "list", "--dir", target, "--type", "ca.backup")
	if !strings.Contains(events, "ca.backup") || !strings.Contains(events, "admin-socket") {
		t.Errorf("the backup is not in its own audit log:\n%s", events)
	}
	for _, f := range []string{"ca.db", "keys/host-ca.key", "policy.yaml", "config.yaml"} {
		if fi, err := os.Stat(filepath.Join(target, f)); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("restored %s: %v %v", f, fi, err)
		}
	}
	startCA(t, r, target, freeAddr(t)) // the restored CA opens its keys and serves
}
