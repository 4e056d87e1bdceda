package playback_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/recorder/atrest"
)

// TestSealedSpoolShipping: an agent whose spool is sealed to the server's
// recipients ships frames it cannot read; the server opens them, follows
// the live session, stores the plaintext and verifies digest and host
// signature. A sealed cast cut short or tampered with in the spool is
// refused with its reason in the shipper's status, and the recordings
// beside it still ship.
func TestSealedSpoolShipping(t *testing.T) {
	w := newWorld(t)
	k, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keys := &atrest.Keys{Recipients: []age.Recipient{k.Recipient()}, Identities: []age.Identity{k}, RecipientStrings: []string{k.Recipient().String()}}
	srv := w.startServer(t, serverOpts{keys: keys})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	seal := agentOpts{sealTo: []age.Recipient{k.Recipient()}}
	a := w.startAgent(t, h, srv.url, seal)

	rec := a.create(t, "s-sealed", "staging", false)
	writeOutput(t, a, rec, 0, 5)
	spoolCast := readFile(t, filepath.Join(a.spool.Dir(), "s-sealed.cast"))
	if !bytes.HasPrefix(spoolCast, []byte(atrest.Magic)) || bytes.Contains(spoolCast, []byte("output line")) {
		t.Fatalf("the spool cast is not sealed: %.60q", spoolCast)
	}
	// Live: the server shows what it opened while the session runs.
	waitFor(t, "the live session's lines on the server", 10*time.Second, func() bool {
		_, body := w.get(t, srv.url+"/api/sessions/s-sealed/cast", w.auditor)
		return bytes.Contains(body, []byte("output line 000004"))
	})
	// sshward-agent status counts file bytes: caught up, nothing is pending.
	waitFor(t, "nothing pending once the server holds every frame", 10*time.Second, func() bool {
		st, ok := statusOf(a, "s-sealed")
		return ok && st.Live && st.Shipped > 0 && st.Pending == 0
	})
	writeOutput(t, a, rec, 5, 5)
	closeRec(t, rec)
	cast := w.shipped(t, a, srv.url, "s-sealed")
	checkCast(t, cast)
	if !bytes.Contains(cast, []byte("output line 000009")) {
		t.Fatalf("the shipped cast lacks the last line:\n%s", cast)
	}
	if d := w.detail(t, srv.url, "s-sealed"); d.Integrity != playback.IntegrityVerified || !d.Complete {
		t.Fatalf("s-sealed: integrity %q, complete %v", d.Integrity, d.Complete)
	}

	// Three finished recordings wait in a spool whose shipper is stopped;
	// two are damaged there.
	dir := filepath.Join(t.TempDir(), "spool")
	seal.spoolDir, seal.noShipper = dir, true
	b := w.startAgent(t, h, srv.url, seal)
	for _, id := range []string{"s-good", "s-cut", "s-tampered"} {
		r := b.create(t, id, "staging", false)
		writeOutput(t, b, r, 0, 20)
		writeOutput(t, b, r, 20, 20)
		closeRec(t, r)
	}
	b.stop()
	cut := filepath.Join(dir, "s-cut.cast")
	data := readFile(t, cut)
	if err := os.WriteFile(cut, data[:len(data)-30], 0o600); err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(dir, "s-tampered.cast")
	data = readFile(t, tampered)
	data[len(atrest.Magic)+300] ^= 1 // inside the first frame's payload
	if err := os.WriteFile(tampered, data, 0o600); err != nil {
		t.Fatal(err)
	}

	seal.noShipper = false
	c := w.startAgent(t, h, srv.url, seal)
	if good := w.shipped(t, c, srv.url, "s-good"); !bytes.Contains(good, []byte("output line 000039")) {
		t.Fatalf("s-good:\n%s", good)
	}
	for id, why := range map[string]string{"s-cut": "truncated", "s-tampered": "tampered with"} {
		waitFor(t, id+" refused with its reason", 20*time.Second, func() bool {
			st, ok := statusOf(c, id)
			return ok && strings.Contains(st.LastError, why)
		})
		if _, err := os.Stat(filepath.Join(dir, id+".cast")); err != nil {
			t.Errorf("%s left the spool: %v", id, err)
		}
	}
}
