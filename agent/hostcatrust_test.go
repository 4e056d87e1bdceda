package agent

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

// TestTerminateDuringHostCARotation (issues 13 §1 and 14): the real CA over
// HTTPS rotates its host-CA key while a real production agent still holds
// a host certificate of the old key (its renewal onto the new key is set
// far off). An auditor's termination, which the CA signs with the new key,
// ends the user's stock ssh session with the reason. Orders signed by keys
// that are not host-CA keys (the tier's real user-CA key, another joined
// host's own host key) end nothing. Once the old key retires (forced at
// the CA, which tells the agent), an order signed with a stolen copy of it
// is refused although it signed the agent's own certificate; and the agent
// drops the old key at its retirement time by itself, CA or not.
func TestTerminateDuringHostCARotation(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := catest.New(t, catest.Options{Policy: noMFAPolicy(t), Keys: &catest.MemRotator{}})
	al := &auditLog{}
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction, cfg: func(c *Config) {
		withAudit(al)(c)
		// Renew onto a new host-CA key only at the end of the spread: the
		// agent keeps its old-key certificate for this whole test.
		c.HostCARenewSpread = 1000 * time.Hour
		c.renewJitter = func(d time.Duration) time.Duration { return d }
	}})
	other := startRealAgent(t, w, agentOpts{tier: api.TierStaging})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	ctx := context.Background()
	w.AddUser(t, "audrey", "correct horse battery", []string{"auditors"}, false)
	auditor := w.Client(t, w.ReaderToken(t, w.Login(t, "audrey", "correct horse battery", "")))
	oldKey := w.HostCA // what an attacker who stole the old key file holds
	if !sameKey(a.srv.identity().cert.SignatureKey, oldKey.PublicKey()) {
		t.Fatal("the agent's host certificate is not signed by the initial host CA key")
	}
	hostKeys := func() []hostCAKey {
		a.srv.hostCA.mu.Lock()
		defer a.srv.hostCA.mu.Unlock()
		if a.srv.hostCA.trust == nil {
			return nil
		}
		return a.srv.hostCA.trust.keys
	}
	waitHostKeys := func(n int) []hostCAKey {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if k := hostKeys(); len(k) == n {
				return k
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent trusts host CA keys %s, want %d keys\n%s", describeHostCAKeys(hostKeys()), n, a.logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitHostKeys(1) // the hello

	k1, _ := issueReal(t, w, c.home, login)
	wait1 := liveSession(t, c, a, k1, login)
	id1 := fmt.Sprint(a.logs.find(t, map[string]string{"msg": "agent: session started", "key_id": k1.cert.KeyId})["session_id"])

	res, err := w.Authority.RotateHostCA(ctx, 48*time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	keys := waitHostKeys(2)
	if ssh.FingerprintSHA256(keys[0].key) != res.Current || !sameKey(keys[1].key, oldKey.PublicKey()) || !keys[1].notAfter.Equal(res.RetireAt) {
		t.Fatalf("host CA keys during the overlap: %s, want %s then the old key until %s", describeHostCAKeys(keys), res.Current, res.RetireAt)
	}
	if !sameKey(a.srv.identity().cert.SignatureKey, oldKey.PublicKey()) {
		t.Fatal("the agent renewed onto the new key: this test needs an old-key certificate")
	}
	// The old key is trusted until its retirement time and not after, by
	// the agent's own clock whether or not the CA says so.
	if n := len(a.srv.orderKeys(a.srv.identity(), res.RetireAt.Add(-time.Second))); n != 2 {
		t.Fatalf("%d host CA keys trusted a second before the old key retires, want 2", n)
	}
	if k := a.srv.orderKeys(a.srv.identity(), res.RetireAt); len(k) != 1 || ssh.FingerprintSHA256(k[0]) != res.Current {
		t.Fatalf("host CA keys trusted when the old key retires: %d, want the new key only", len(k))
	}

	// The auditor's order, signed by the CA with the new key, ends the
	// session of the agent whose certificate the old key signed.
	if _, err := auditor.Terminate(ctx, id1, api.TerminateRequest{Reason: "INC-77 during the rotation", Host: "web1", Tier: api.TierProduction, User: login, Serial: k1.cert.Serial}); err != nil {
		t.Fatalf("terminate: %v", err)
	}
	out, errOut, err := wait1()
	if strings.Contains(out, "not-ended") || !strings.Contains(errOut, "sshward: session ended: terminated by audrey: INC-77 during the rotation") {
		t.Fatalf("the new key's order did not end the old-key agent's session: %q %q", out, errOut)
	}
	if code := exitCode(err); code != ExitTerminated {
		t.Errorf("ssh exit status %d, want %d", code, ExitTerminated)
	}
	al.find(t, func(e AuditEvent) bool { return e.Action == AuditSessionTerminated && e.SessionID == id1 })

	// Attackers' orders for a second live session.
	k2, _ := issueReal(t, w, c.home, login)
	wait2 := liveSession(t, c, a, k2, login)
	id2 := fmt.Sprint(a.logs.find(t, map[string]string{"msg": "agent: session started", "key_id": k2.cert.KeyId})["session_id"])
	var saved time.Time
	n := 0
	order := func(signer ssh.Signer) api.RevocationEvent {
		n++
		now := time.Now()
		o := api.TerminateOrder{SessionID: id2, Host: "web1", Tier: api.TierProduction, By: "mallory", Reason: "forged",
			IssuedAt: now, Expires: now.Add(api.TerminateOrderTTL), Nonce: fmt.Sprintf("attack-%d", n)}
		if err := o.Sign(rand.Reader, signer); err != nil {
			t.Fatal(err)
		}
		return api.RevocationEvent{Type: api.EventTerminate, Terminate: &o}
	}
	stillLive := func(what string) {
		t.Helper()
		for _, conn := range a.srv.liveConns() {
			if strings.HasPrefix(id2, conn.id+"-") && conn.ctx.Err() != nil {
				t.Fatalf("%s ended the session: %v", what, context.Cause(conn.ctx))
			}
		}
	}
	a.srv.applyRevocationEvent(ctx, order(w.UserCAs[api.TierProduction]), &saved)
	stillLive("an order signed by the tier's user CA key")
	a.srv.applyRevocationEvent(ctx, order(other.srv.identity().key), &saved)
	stillLive("an order signed by another host's host key")

	// The old key retires early (known stolen): the CA tells the agent,
	// and the stolen key's order is refused.
	if _, err := w.Authority.RetireHostCA(ctx, true, "test"); err != nil {
		t.Fatal(err)
	}
	if k := waitHostKeys(1); ssh.FingerprintSHA256(k[0].key) != res.Current {
		t.Fatalf("host CA keys after retirement: %s", describeHostCAKeys(k))
	}
	a.srv.applyRevocationEvent(ctx, order(oldKey), &saved)
	stillLive("an order signed by the retired host CA key")
	if got := strings.Count(a.logs.String(), "agent: terminate order ignored"); got != 3 {
		t.Errorf("%d orders logged as ignored, want 3", got)
	}
	if strings.Contains(a.logs.String(), "mallory") {
		t.Error("the agent logged what an unverified order says")
	}
	// The CA's own order (new key) still ends it.
	if _, err := auditor.Terminate(ctx, id2, api.TerminateRequest{Reason: "after retirement", Host: "web1", Tier: api.TierProduction, User: login, Serial: k2.cert.Serial}); err != nil {
		t.Fatalf("terminate: %v", err)
	}
	if out, errOut, _ := wait2(); strings.Contains(out, "not-ended") || strings.Contains(errOut, "mallory") || !strings.Contains(errOut, "terminated by audrey: after retirement") {
		t.Fatalf("session 2: %q %q", out, errOut)
	}
}

// TestHostCARotationRenewsAgent: a real agent renews its host certificate
// onto the new host-CA key as soon as the revocation stream names it, with
// no restart and well before the old key retires; after retirement, stock
// ssh whose known_hosts holds only the new key (what `sshward ssh-config`
// then writes) accepts the agent, and ssh that knows only the retired key
// refuses it.
func TestHostCARotationRenewsAgent(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := catest.New(t, catest.Options{Policy: noMFAPolicy(t), Keys: &catest.MemRotator{}})
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction, cfg: func(c *Config) {
		c.renewJitter = func(time.Duration) time.Duration { return 0 }
	}})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	ctx := context.Background()
	oldSerial := a.srv.identity().cert.Serial
	res, err := w.Authority.RotateHostCA(ctx, 48*time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for ssh.FingerprintSHA256(a.srv.identity().cert.SignatureKey) != res.Current {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not renew onto the new host CA key %s\n%s", res.Current, a.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a.srv.identity().cert.Serial == oldSerial {
		t.Fatal("the host certificate changed key without a new serial")
	}
	a.logs.find(t, map[string]string{"msg": "agent: the host CA signs with a new key; renewing the host certificate onto it"})
	if _, err := w.Authority.RetireHostCA(ctx, true, "test"); err != nil {
		t.Fatal(err)
	}
	tr, err := w.Client(t, "").Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.HostCAKeys) != 1 {
		t.Fatalf("trust after retirement: %q", tr.HostCAKeys)
	}
	if err := os.WriteFile(c.knownHosts, []byte("@cert-authority * "+tr.HostCAKeys[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, _ := issueReal(t, w, c.home, login)
	if out, errOut, err := c.run(k, login, nil, "echo logged-in"); err != nil || out != "logged-in\n" {
		t.Fatalf("ssh with only the new host CA key: %v %q %q", err, out, errOut)
	}
	stale := &sshClient{t: t, home: c.home, knownHosts: filepath.Join(t.TempDir(), "known_hosts"), port: c.port}
	if err := os.WriteFile(stale.knownHosts, []byte("@cert-authority * "+string(ssh.MarshalAuthorizedKey(w.HostCA.PublicKey()))), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := stale.run(k, login, nil, "echo logged-in"); err == nil || strings.Contains(out, "logged-in") || !strings.Contains(errOut, "Host key verification failed") {
		t.Fatalf("ssh that trusts only the retired key accepted the renewed agent: %v %q %q", err, out, errOut)
	}
}
