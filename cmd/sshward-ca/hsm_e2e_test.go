//go:build pkcs11

package main_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/keys"
	"github.com/sshward/sshward/ca/store/etcdtest"
)

// TestPKCS11CAKeysInSoftHSM: an operator makes a CA whose SSH CA keys are
// in a real PKCS#11 token (SoftHSM2) with `sshward-ca init --kms`, runs
// the real sshward-ca (built with -tags pkcs11) and gets a certificate
// that stock ssh-keygen shows signed by the token key and stock sshd
// accepts; rotates the staging key (a new object in the token) while the
// CA serves: the next certificate is signed by the new key, `trust` lists
// both, a stock sshd with that trust accepts both certificates, a restart
// keeps signing with the new key; retires the old key: it is destroyed in
// the token and an sshd with the refreshed trust refuses its certificate.
// The CA directory never holds private key material or the PIN; a URI
// with pin-value and a pin file others can read are refused.
func TestPKCS11CAKeysInSoftHSM(t *testing.T) {
	catest.NeedOpenSSH(t)
	base, pinFile := catest.SoftHSM(t)
	kms := base + "?pin-source=" + pinFile
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=hsm-e2e-passphrase-9", "SSHWARD_HOME=" + filepath.Join(work, "home"), "SSH_AUTH_SOCK="}}

	// The attacker's shortcuts: a PIN in the URI, a PIN file others read.
	res := r.run("", "sshward-ca", "init", "--dir", filepath.Join(work, "bad"), "--kms", base+"?pin-value="+catest.SoftHSMPIN)
	if res.code == 0 || !strings.Contains(res.stderr, "pin-source") || strings.Contains(res.stderr+res.stdout, catest.SoftHSMPIN) {
		t.Fatalf("init with pin-value: %d %q", res.code, res.stderr)
	}
	if err := os.Chmod(pinFile, 0o640); err != nil {
		t.Fatal(err)
	}
	if res := r.run("", "sshward-ca", "init", "--dir", filepath.Join(work, "bad2"), "--kms", kms); res.code == 0 || !strings.Contains(res.stderr, "chmod 600") {
		t.Fatalf("init with a pin file mode 0640: %d %q", res.code, res.stderr)
	}
	if err := os.Chmod(pinFile, 0o600); err != nil {
		t.Fatal(err)
	}

	var initRes struct {
		UserCA map[string]string `json:"user_ca"`
		HostCA string            `json:"host_ca"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--kms", kms, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(initRes.UserCA["staging"], "ecdsa-sha2-nistp256 ") || !strings.HasPrefix(initRes.HostCA, "ecdsa-sha2-nistp256 ") {
		t.Fatalf("init --kms made %+v, want token (ECDSA P-256) keys", initRes)
	}
	noSecretsIn(t, caDir)
	r.ok("bench-Secret-pw1\n", "sshward-ca", "users", "add", "bench", "--dir", caDir, "--groups", "engineers", "--password-stdin")

	addr := freeAddr(t)
	srv := startCA(t, r, caDir, addr)
	is := newIssuer(t, r, caDir, addr)
	trust0 := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--tier", "staging"))
	if len(trust0) != 1 || !contains(trust0, initRes.UserCA["staging"]) {
		t.Fatalf("trust --tier staging: %q, init said %q", trust0, initRes.UserCA["staging"])
	}
	oldFP := lineFingerprint(t, trust0[0])
	certA := userCert(t, is, work, "a")
	if got := signingCA(t, certA.cert); got != oldFP {
		t.Fatalf("certificate signed by %s, want the token key %s", got, oldFP)
	}
	me := catest.CurrentUser(t)
	sshdLogin(t, trust0, me, certA, true)

	oldURI := tokenURI(t, r, caDir, "staging")
	var rot struct {
		Previous string `json:"previous_fingerprint"`
		Current  string `json:"current_fingerprint"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "keys", "rotate", "--dir", caDir, "--tier", "staging", "--json")), &rot); err != nil {
		t.Fatal(err)
	}
	if rot.Previous != oldFP || rot.Current == oldFP {
		t.Fatalf("rotate: %+v (old %s)", rot, oldFP)
	}
	newURI := tokenURI(t, r, caDir, "staging")
	if newURI == oldURI || !strings.Contains(newURI, "token=sshward") || !strings.Contains(newURI, "object=sshward-user-ca-staging-") {
		t.Fatalf("the new key is %q (old %q): want a new object in the same token", newURI, oldURI)
	}
	certB := userCert(t, is, work, "b")
	if got := signingCA(t, certB.cert); got != rot.Current {
		t.Fatalf("after rotation, certificate signed by %s, want the new key %s", got, rot.Current)
	}
	during := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--tier", "staging"))
	if len(during) != 2 || !contains(during, trust0[0]) {
		t.Fatalf("trust during the overlap: %q", during)
	}
	sshdLogin(t, during, me, certA, true)
	sshdLogin(t, during, me, certB, true)

	// Restarted inside the overlap, the CA signs with the new token key.
	srv.Process.Signal(os.Interrupt)
	srv.Wait()
	startCA(t, r, caDir, addr)
	is = newIssuer(t, r, caDir, addr)
	if got := signingCA(t, userCert(t, is, work, "c").cert); got != rot.Current {
		t.Fatalf("after a restart, certificate signed by %s, want %s", got, rot.Current)
	}

	// The host CA rotates inside the token too.
	r.ok("", "sshward-ca", "keys", "rotate", "--dir", caDir, "--host-ca")
	if got := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--hosts")); len(got) != 2 {
		t.Fatalf("trust --hosts after the host CA rotation: %q", got)
	}

	if out := r.ok("", "sshward-ca", "keys", "retire", "--dir", caDir, "--tier", "staging", "--force"); !strings.Contains(out, "retired "+oldFP) {
		t.Fatalf("retire said %q", out)
	}
	after := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", caDir, "--tier", "staging"))
	if len(after) != 1 || contains(after, trust0[0]) {
		t.Fatalf("trust after retirement: %q", after)
	}
	sshdLogin(t, after, me, certA, false)
	sshdLogin(t, after, me, certB, true)
	if k, err := keys.Open(context.Background(), oldURI+"?pin-source="+pinFile, nil); err == nil {
		k.Close()
		t.Fatal("the retired key still opens in the token")
	}
	noSecretsIn(t, caDir)

	audit := r.ok("", "sshward-ca", "audit", "list", "--dir", caDir, "--json")
	for _, want := range []string{`"key.rotate"`, `"key.retire"`, rot.Previous, rot.Current} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %s", want)
		}
	}
	if strings.Contains(audit, catest.SoftHSMPIN) {
		t.Error("the audit log shows the PIN")
	}
}

// noSecretsIn fails when dir holds an SSH CA private key (a .key file in
// keys/, or any PRIVATE KEY block outside the TLS root's file) or the PIN.
func noSecretsIn(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.HasPrefix(rel, "keys/") && strings.HasSuffix(rel, ".key") || strings.Contains(string(data), "PRIVATE KEY") && !strings.HasPrefix(rel, "tls/") {
			t.Errorf("%s holds private key material", rel)
		}
		if strings.Contains(string(data), catest.SoftHSMPIN) {
			t.Errorf("%s holds the PIN", rel)
		}
		if strings.HasSuffix(rel, ".uri") {
			if fi, _ := d.Info(); fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v", rel, fi.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tokenURI is the signing key URI of tier from keys list --json.
func tokenURI(t *testing.T, r *runner, caDir, tier string) string {
	t.Helper()
	var list []struct {
		Tier string `json:"tier"`
		URI  string `json:"uri"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "keys", "list", "--dir", caDir, "--json")), &list); err != nil {
		t.Fatal(err)
	}
	for _, k := range list {
		if k.Tier == tier {
			if !strings.HasPrefix(k.URI, "pkcs11:") || strings.Contains(k.URI, "pin") {
				t.Fatalf("keys list: %s's uri %q", tier, k.URI)
			}
			return k.URI
		}
	}
	t.Fatalf("keys list has no tier %s", tier)
	return ""
}

// TestPKCS11ReplicasShareTokenKeys: two real sshward-ca replicas (built
// with -tags pkcs11) on a real etcd use CA keys in one SoftHSM2 token. A
// rotation through replica A makes the new key in the token, and the
// next certificate through replica B is signed by it (B reaches the same
// token key by the URI in the shared store; no key file anywhere); `trust`
// through B lists both; retired through B, the old key is destroyed in
// the token and the shared trust lists only the new one.
func TestPKCS11ReplicasShareTokenKeys(t *testing.T) {
	base, pinFile := catest.SoftHSM(t)
	ec := etcdtest.Start(t, 1)
	work := t.TempDir()
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=hsm-replicas-pass-3", "SSHWARD_HOME=" + filepath.Join(work, "home"), "SSH_AUTH_SOCK="}}
	dirA, dirB := filepath.Join(work, "caA"), filepath.Join(work, "caB")
	initOnEtcd(t, r, dirA, ec.Endpoints(), "hsm", "--kms", base+"?pin-source="+pinFile)
	r.ok("bench-Secret-pw1\n", "sshward-ca", "users", "add", "bench", "--dir", dirA, "--groups", "engineers", "--password-stdin")
	if out, err := exec.Command("cp", "-a", dirA, dirB).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	addrA, addrB := freeAddr(t), freeAddr(t)
	startCA(t, r, dirA, addrA)
	startCA(t, r, dirB, addrB)
	isB := newIssuer(t, r, dirB, addrB)
	oldURI := tokenURI(t, r, dirB, "staging")

	var rot struct {
		Previous string `json:"previous_fingerprint"`
		Current  string `json:"current_fingerprint"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "keys", "rotate", "--dir", dirA, "--tier", "staging", "--json")), &rot); err != nil {
		t.Fatal(err)
	}
	if got := signingCA(t, userCert(t, isB, work, "b1").cert); got != rot.Current {
		t.Fatalf("certificate through B right after the rotation through A signed by %s, want the new token key %s", got, rot.Current)
	}
	if newURI := tokenURI(t, r, dirB, "staging"); newURI == oldURI || !strings.Contains(newURI, "token=sshward") {
		t.Fatalf("keys list through B: signing key %q (old %q)", newURI, oldURI)
	}
	if got := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", dirB, "--tier", "staging")); len(got) != 2 {
		t.Fatalf("trust through B during the overlap: %q", got)
	}
	r.ok("", "sshward-ca", "keys", "retire", "--dir", dirB, "--tier", "staging", "--force")
	if got := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", dirA, "--tier", "staging")); len(got) != 1 || lineFingerprint(t, got[0]) != rot.Current {
		t.Fatalf("trust through A after retirement: %q", got)
	}
	if k, err := keys.Open(context.Background(), oldURI+"?pin-source="+pinFile, nil); err == nil {
		k.Close()
		t.Fatal("the retired key still opens in the token")
	}
	noSecretsIn(t, dirA)
	noSecretsIn(t, dirB)
}
