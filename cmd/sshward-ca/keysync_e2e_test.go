package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/store/etcdtest"
)

// TestReplicasRotateKeysOnEtcd: two real sshward-ca replicas on a real
// etcd, each with its own copy of the CA directory (key files). The
// staging key is rotated through replica A; a certificate issued through
// replica B right after is signed by the new key (B never had its file:
// the new key reached it, encrypted, through the store); `trust --tier`
// through B lists both keys and a stock sshd with it accepts certificates
// of both; retired through B, the shared trust lists only the new key and
// a stock sshd with the refreshed trust refuses the old key's certificate.
// The audit chain records the rotation and the retirement once each; A,
// restarted with its stale key files, signs with the shared new key; a
// second rotation during the overlap is refused through either replica;
// two rotations raced through A and B at once: exactly one succeeds.
func TestReplicasRotateKeysOnEtcd(t *testing.T) {
	catest.NeedOpenSSH(t)
	ec := etcdtest.Start(t, 1)
	work := t.TempDir()
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=keysync-passphrase-5", "SSHWARD_HOME=" + filepath.Join(work, "home"), "SSH_AUTH_SOCK="}}
	dirA, dirB := filepath.Join(work, "caA"), filepath.Join(work, "caB")
	initOnEtcd(t, r, dirA, ec.Endpoints(), "keysync")
	r.ok("bench-Secret-pw1\n", "sshward-ca", "users", "add", "bench", "--dir", dirA, "--groups", "engineers", "--password-stdin")
	if out, err := exec.Command("cp", "-a", dirA, dirB).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	addrA, addrB := freeAddr(t), freeAddr(t)
	srvA := startCA(t, r, dirA, addrA)
	startCA(t, r, dirB, addrB)
	isA, isB := newIssuer(t, r, dirA, addrA), newIssuer(t, r, dirB, addrB)

	before := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", dirB, "--tier", "staging"))
	if len(before) != 1 {
		t.Fatalf("trust through B before the rotation: %q", before)
	}
	oldFP := lineFingerprint(t, before[0])
	cert0 := userCert(t, isB, work, "zero")
	if got := signingCA(t, cert0.cert); got != oldFP {
		t.Fatalf("certificate through B signed by %s, want %s", got, oldFP)
	}

	var rot struct {
		Previous string   `json:"previous_fingerprint"`
		Current  string   `json:"current_fingerprint"`
		Keys     []string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "keys", "rotate", "--dir", dirA, "--tier", "staging", "--json")), &rot); err != nil {
		t.Fatal(err)
	}
	if rot.Previous != oldFP || rot.Current == oldFP {
		t.Fatalf("rotate through A: %+v (old %s)", rot, oldFP)
	}
	// Right after, through B: the new key signs.
	cert1 := userCert(t, isB, work, "one")
	if got := signingCA(t, cert1.cert); got != rot.Current {
		t.Fatalf("certificate through B right after the rotation through A signed by %s, want the new key %s", got, rot.Current)
	}
	if _, err := os.Stat(filepath.Join(dirB, "keys", "user-ca-staging.prev.key")); !os.IsNotExist(err) {
		t.Fatalf("B's key directory changed: %v", err)
	}
	during := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", dirB, "--tier", "staging"))
	if len(during) != 2 || lineFingerprint(t, during[0]) != rot.Current || lineFingerprint(t, during[1]) != oldFP {
		t.Fatalf("trust through B during the overlap: %q", during)
	}
	if list := r.ok("", "sshward-ca", "keys", "list", "--dir", dirB); !strings.Contains(list, rot.Current) || !strings.Contains(list, rot.Previous) {
		t.Fatalf("keys list through B:\n%s", list)
	}
	me := catest.CurrentUser(t)
	sshdLogin(t, during, me, cert0, true)
	sshdLogin(t, during, me, cert1, true)
	for _, d := range []string{dirA, dirB} {
		if res := r.run("", "sshward-ca", "keys", "rotate", "--dir", d, "--tier", "staging"); res.code == 0 || !strings.Contains(res.stderr, "retire it first") {
			t.Fatalf("a second rotation through %s during the overlap: %d %q", filepath.Base(d), res.code, res.stderr)
		}
	}

	if out := r.ok("", "sshward-ca", "keys", "retire", "--dir", dirB, "--tier", "staging", "--force"); !strings.Contains(out, "retired "+oldFP) {
		t.Fatalf("retire through B said %q", out)
	}
	after := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", dirA, "--tier", "staging"))
	if len(after) != 1 || lineFingerprint(t, after[0]) != rot.Current {
		t.Fatalf("trust through A after retirement through B: %q", after)
	}
	sshdLogin(t, after, me, cert0, false)
	sshdLogin(t, after, me, cert1, true)
	if got := signingCA(t, userCert(t, isA, work, "two").cert); got != rot.Current {
		t.Fatalf("certificate through A after the retirement signed by %s, want %s", got, rot.Current)
	}

	// A restarts with its own (stale) key files: the shared key set wins.
	srvA.Process.Signal(os.Interrupt)
	srvA.Wait()
	startCA(t, r, dirA, addrA)
	isA = newIssuer(t, r, dirA, addrA)
	if got := signingCA(t, userCert(t, isA, work, "three").cert); got != rot.Current {
		t.Fatalf("certificate through a restarted A signed by %s, want the shared key %s", got, rot.Current)
	}

	var evs []struct {
		Type    string            `json:"type"`
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", dirB, "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range evs {
		if strings.HasPrefix(ev.Type, "key.") {
			count[ev.Type]++
			if ev.Details["current_fingerprint"] != rot.Current || ev.Details["previous_fingerprint"] != rot.Previous {
				t.Errorf("%s record: %v", ev.Type, ev.Details)
			}
		}
	}
	if count["key.rotate"] != 1 || count["key.retire"] != 1 {
		t.Fatalf("audit records of the key steps: %v, want one rotate and one retire", count)
	}

	// Two operators rotate production at once through A and B: etcd takes
	// one rotation, the other is refused, and one new key is trusted.
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i, d := range []string{dirA, dirB} {
		wg.Go(func() { results[i] = r.run("", "sshward-ca", "keys", "rotate", "--dir", d, "--tier", "production") })
	}
	wg.Wait()
	if ok := (results[0].code == 0) != (results[1].code == 0); !ok {
		t.Fatalf("concurrent rotations through A and B: exit %d (%q) and %d (%q), want exactly one to succeed",
			results[0].code, results[0].stderr, results[1].code, results[1].stderr)
	}
	if got := nonEmptyLines(r.ok("", "sshward-ca", "trust", "--dir", dirB, "--tier", "production")); len(got) != 3 { // production's two and break-glass's
		t.Fatalf("trust --tier production after the race: %q", got)
	}
	if got := r.ok("", "sshward-ca", "audit", "list", "--dir", dirA, "--type", "key.rotate"); strings.Count(got, "production") != 1 {
		t.Fatalf("key.rotate records of production after the race:\n%s", got)
	}
	if out := r.ok("", "sshward-ca", "audit", "verify", "--dir", dirA); !strings.Contains(out, "audit chain intact") {
		t.Errorf("audit verify: %q", out)
	}
}
