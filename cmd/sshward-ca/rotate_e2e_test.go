package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyRotateWhileServing: an operator rotates the production user-CA
// key of a running sshward-ca (through its admin socket), sees both keys
// in `trust --tier` during the overlap, is refused a second rotation and
// an early retirement without --force, retires, and finds key.rotate and
// key.retire with both fingerprints in an audit chain that verifies. A
// restart during an overlap keeps both keys; the offline verbs work with
// the CA stopped. Private key files stay 0600.
func TestKeyRotateWhileServing(t *testing.T) {
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=rotate-passphrase-42", "SSHWARD_HOME=" + filepath.Join(work, "home")}}
	r.ok("", "sshward-ca", "init", "--dir", caDir)
	before := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--tier", "production"))
	if len(before) != 2 { // production's key and break-glass's
		t.Fatalf("trust before rotation: %q", before)
	}
	srv := startCA(t, r, caDir, freeAddr(t))

	if res := r.run("", "sshward-ca", "keys", "rotate", "--dir", caDir, "--tier", "production", "--overlap", "10m"); res.code != 1 || !strings.Contains(res.stderr, "shorter than tier production's max_ttl 30m0s") {
		t.Fatalf("rotation with a short overlap: %d %q", res.code, res.stderr)
	}
	var rot struct {
		Tier     string   `json:"tier"`
		Previous string   `json:"previous_fingerprint"`
		Current  string   `json:"current_fingerprint"`
		Keys     []string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "keys", "rotate", "--dir", caDir, "--tier", "production", "--json")), &rot); err != nil {
		t.Fatal(err)
	}
	if rot.Tier != "production" || rot.Previous == "" || rot.Current == rot.Previous || len(rot.Keys) != 2 {
		t.Fatalf("rotate --json: %+v", rot)
	}
	during := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--tier", "production"))
	if len(during) != 3 || !contains(during, before[0]) || !strings.Contains(strings.Join(during, "\n"), "(previous, retires ") {
		t.Fatalf("trust during the overlap: %q (before %q)", during, before)
	}
	for _, f := range []string{"user-ca-production.key", "user-ca-production.prev.key"} {
		if fi, err := os.Stat(filepath.Join(caDir, "keys", f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}
	if res := r.run("", "sshward-ca", "keys", "rotate", "--dir", caDir, "--tier", "production"); res.code != 1 || !strings.Contains(res.stderr, "retire it first") {
		t.Fatalf("second rotation during the overlap: %d %q", res.code, res.stderr)
	}
	if res := r.run("", "sshward-ca", "keys", "retire", "--dir", caDir, "--tier", "production"); res.code != 1 || !strings.Contains(res.stderr, "pass --force") {
		t.Fatalf("retire before the overlap ends: %d %q", res.code, res.stderr)
	}
	list := r.ok("", "sshward-ca", "keys", "list", "--dir", caDir)
	if !strings.Contains(list, rot.Current) || !strings.Contains(list, rot.Previous) {
		t.Fatalf("keys list during the overlap:\n%s", list)
	}

	// A restart inside the overlap keeps both keys.
	srv.Process.Signal(os.Interrupt)
	srv.Wait()
	srv = startCA(t, r, caDir, freeAddr(t))
	if got := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--tier", "production")); len(got) != 3 {
		t.Fatalf("trust after a restart in the overlap: %q", got)
	}
	out := r.ok("", "sshward-ca", "keys", "retire", "--dir", caDir, "--tier", "production", "--force")
	if !strings.Contains(out, "retired "+rot.Previous) {
		t.Fatalf("retire said %q", out)
	}
	after := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--tier", "production"))
	if len(after) != 2 || contains(after, before[0]) {
		t.Fatalf("trust after retirement: %q", after)
	}
	if _, err := os.Stat(filepath.Join(caDir, "keys", "user-ca-production.prev.key")); !os.IsNotExist(err) {
		t.Fatalf("the retired private key is still there: %v", err)
	}

	// Offline, with the CA stopped: the same verbs, audited as admin-offline.
	srv.Process.Signal(os.Interrupt)
	srv.Wait()
	r.ok("", "sshward-ca", "keys", "rotate", "--dir", caDir, "--tier", "staging", "--overlap", "2h")
	if got := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--tier", "staging")); len(got) != 2 {
		t.Fatalf("trust --tier staging after an offline rotation: %q", got)
	}
	r.ok("", "sshward-ca", "keys", "retire", "--dir", caDir, "--tier", "staging", "--force")
	if got := r.ok("", "sshward-ca", "audit", "list", "--dir", caDir, "--type", "key.retire"); !strings.Contains(got, "admin-offline") {
		t.Errorf("offline retire not audited as admin-offline:\n%s", got)
	}

	audit := r.ok("", "sshward-ca", "audit", "list", "--dir", caDir, "--json")
	for _, typ := range []string{"key.rotate", "key.retire"} {
		if !strings.Contains(audit, `"`+typ+`"`) {
			t.Errorf("no %s audit record:\n%s", typ, audit)
		}
	}
	if !strings.Contains(audit, rot.Previous) || !strings.Contains(audit, rot.Current) {
		t.Errorf("the audit records lack a fingerprint:\n%s", audit)
	}
	if out := r.ok("", "sshward-ca", "audit", "verify", "--dir", caDir); !strings.Contains(out, "audit chain intact") {
		t.Errorf("audit verify: %q", out)
	}
	for _, secret := range []string{"PRIVATE KEY", "rotate-passphrase-42"} {
		if strings.Contains(audit, secret) {
			t.Errorf("the audit log shows %q", secret)
		}
	}
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// contains reports whether lines hold the key of line (type and base64;
// the comment may differ).
func contains(lines []string, line string) bool {
	key := strings.Join(strings.Fields(line)[:2], " ")
	for _, l := range lines {
		if strings.HasPrefix(l, key+" ") || l == key {
			return true
		}
	}
	return false
}
