package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/store"
)

// shiftClock is time.Now plus an offset a test moves forward: the CA and
// the agent share it, so "after the overlap" needs no waiting and the test
// passes on any date.
type shiftClock struct{ off atomic.Int64 }

func (c *shiftClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *shiftClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// TestKeyRotationRealCA: the real CA over HTTPS, a real production agent
// and stock OpenSSH ssh. The production user-CA key rotates while a session
// with an old-key certificate is live: the session goes on; the agent
// learns the new key by itself; a new certificate is signed by the new key
// and admitted, the old-key one still is during the overlap; the trust
// endpoint names both keys, then one. After the overlap the old key's
// certificates are refused with the reason, including one an attacker
// who stole the old key file signs afterwards. The audit chain holds
// key.rotate and key.retire with both fingerprints and verifies.
func TestKeyRotationRealCA(t *testing.T) {
	catest.NeedOpenSSH(t)
	clk := &shiftClock{}
	rot := &catest.MemRotator{}
	w := catest.New(t, catest.Options{Policy: noMFAPolicy(t), Now: clk.now, Keys: rot, RevocationHeartbeat: 500 * time.Millisecond})
	al := &auditLog{}
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction, cfg: func(c *Config) {
		withAudit(al)(c)
		c.Now = clk.now
	}})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	ctx := context.Background()
	oldCA := w.UserCAs[api.TierProduction]
	oldFP := ssh.FingerprintSHA256(oldCA.PublicKey())

	// A live session with a certificate of the old key.
	k1, _ := issueReal(t, w, c.home, login)
	if !bytes.Equal(k1.cert.SignatureKey.Marshal(), oldCA.PublicKey().Marshal()) {
		t.Fatal("the first certificate is not signed by the initial key")
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(sctx, "ssh", append(c.args(k1, login), "echo started; read x; echo continued-$x")...)
	cmd.Env = c.env()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("live session: %q %v %s", line, err, errb.String())
	}

	// An overlap shorter than the tier's max_ttl is refused.
	if _, err := w.Authority.RotateUserCA(ctx, api.TierProduction, 10*time.Minute, "test"); !errors.Is(err, ca.ErrOverlapTooShort) || !strings.Contains(err.Error(), "--overlap 30m0s") {
		t.Fatalf("rotation with a 10m overlap on a 30m tier: %v", err)
	}
	res, err := w.Authority.RotateUserCA(ctx, api.TierProduction, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	if res.Previous != oldFP || res.Current == oldFP || len(res.Keys) != 2 {
		t.Fatalf("rotation result %+v", res)
	}
	a.logs.find(t, map[string]string{"msg": "agent: trusted user CA keys updated"})

	// The live session goes on.
	if _, err := io.WriteString(stdin, "after-rotate\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := out.ReadString('\n'); err != nil || line != "continued-after-rotate\n" {
		t.Fatalf("live session after rotation: %q %v %s", line, err, errb.String())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("live session: %v %s", err, errb.String())
	}

	// Trust names both keys, the new one first.
	tr, err := w.Client(t, "").Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keysOf := func(tr *api.TrustResponse) []string {
		var fps []string
		for _, l := range tr.UserCAKeys[api.TierProduction] {
			k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l))
			if err != nil {
				t.Fatal(err)
			}
			fps = append(fps, ssh.FingerprintSHA256(k))
		}
		return fps
	}
	if got := keysOf(tr); len(got) != 2 || got[0] != res.Current || got[1] != oldFP {
		t.Fatalf("trust during the overlap: %v, want [%s %s]", got, res.Current, oldFP)
	}

	// A new certificate is signed by the new key and admitted; the old
	// one still is.
	k2, _ := issueReal(t, w, c.home, login)
	if got := ssh.FingerprintSHA256(k2.cert.SignatureKey); got != res.Current {
		t.Fatalf("new certificate signed by %s, want %s", got, res.Current)
	}
	for name, k := range map[string]*userKey{"new key": k2, "old key in the overlap": k1} {
		if out, errOut, err := c.run(k, login, nil, "echo logged-in"); err != nil || out != "logged-in\n" {
			t.Fatalf("%s: %v %q %q", name, err, out, errOut)
		}
	}

	// The overlap ends: the agent drops the old key by itself (the CA has
	// not retired it yet), and so does the trust endpoint.
	clk.advance(time.Hour + time.Minute)
	attacker := func() *userKey {
		now := clk.now()
		return mint(t, c.home, oldCA, ssh.Certificate{
			KeyId: login + "@local tier=production req=- serial=1", Serial: 1, ValidPrincipals: []string{login},
			ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(10 * time.Minute).Unix()),
			Permissions: ssh.Permissions{Extensions: productionExt()},
		}, nil)
	}
	refusedRetired := func(name string, k *userKey) {
		t.Helper()
		if out, errOut, err := c.run(k, login, nil, "echo logged-in"); err == nil || strings.Contains(out, "logged-in") {
			t.Fatalf("%s admitted after retirement: %q %q", name, out, errOut)
		}
		ev := al.find(t, func(e AuditEvent) bool {
			return e.Action == AuditAdmissionRefused && e.Reason == reasonRetiredCA && strings.Contains(e.Detail, "key="+ssh.FingerprintSHA256(k.cert.Key))
		})
		if !strings.Contains(ev.Detail, "ca="+oldFP) || !strings.Contains(ev.Detail, "retired_at=") {
			t.Fatalf("%s: refusal detail %q", name, ev.Detail)
		}
	}
	refusedRetired("old-key certificate past the overlap", k1)
	refusedRetired("attacker's certificate from the stolen old key", attacker())
	if got := keysOf(must1(w.Client(t, "").Trust(ctx))); len(got) != 1 || got[0] != res.Current {
		t.Fatalf("trust after the overlap: %v", got)
	}

	// The CA retires it (what RunKeyRetirement does at the overlap's end):
	// the agent hears the key is gone and keeps refusing it.
	ret, err := w.Authority.RetireUserCA(ctx, api.TierProduction, false, "test")
	if err != nil {
		t.Fatal(err)
	}
	if ret.Previous != oldFP || ret.Current != res.Current || rot.Retired() != 1 {
		t.Fatalf("retire result %+v (rotator retired %d)", ret, rot.Retired())
	}
	waitUntil(t, "the agent drops the retired key", func() bool {
		id := a.srv.identity()
		return len(id.userCAs) == 2 && !id.userCAs[string(oldCA.PublicKey().Marshal())] // production's new key and break-glass
	})
	refusedRetired("attacker's certificate after the CA retired the key", attacker())

	// The audit chain holds both steps with both fingerprints, and verifies.
	evs, err := w.Store.Audit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range evs {
		if (e.Type == "key.rotate" || e.Type == "key.retire") && e.Tier == api.TierProduction &&
			e.Details["previous_fingerprint"] == oldFP && e.Details["current_fingerprint"] == res.Current {
			seen[e.Type] = true
		}
	}
	if !seen["key.rotate"] || !seen["key.retire"] {
		t.Fatalf("audit records of the rotation: %v", seen)
	}
	if rep, err := w.Authority.VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain (%+v): %v", rep, err)
	}
}

func must1[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// waitUntil polls cond for up to 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
