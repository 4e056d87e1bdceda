package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// TestTerminateLiveSession (issue 13 §1): real CA over HTTPS, a real agent
// on the production tier, stock OpenSSH ssh as the user. An engineer
// without the auditor role asks the CA to end the session: 403, audited,
// no order sent, the session goes on. An auditor ends it with a reason
// through the CA's API (a reader token, as the playback server and
// `sshward terminate` use): the user's ssh prints who ended it and why and
// exits with ExitTerminated, the recording has the reason as a marker and
// as its end reason, the CA's audit chain has the order with actor and
// reason, the agent's audit the execution.
func TestTerminateLiveSession(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := catest.New(t, catest.Options{Policy: noMFAPolicy(t)})
	al := &auditLog{}
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction, cfg: withAudit(al)})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	ctx := context.Background()
	w.AddUser(t, "audrey", "correct horse battery", []string{"auditors"}, false)
	w.AddUser(t, "eve", "correct horse battery", []string{"sre"}, false)
	auditor := w.Client(t, w.ReaderToken(t, w.Login(t, "audrey", "correct horse battery", "")))
	engineer := w.Client(t, w.Login(t, "eve", "correct horse battery", ""))

	k, _ := issueReal(t, w, c.home, login)
	wait := liveSession(t, c, a, k, login)
	rec := a.logs.find(t, map[string]string{"msg": "agent: session started", "key_id": k.cert.KeyId})
	id := fmt.Sprint(rec["session_id"])
	req := api.TerminateRequest{Reason: "INC-42 copying customer data", Host: "web1", Tier: api.TierProduction, User: login, Serial: k.cert.Serial}

	// Attacker row: no auditor role.
	_, err := engineer.Terminate(ctx, id, req)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("terminate by a non-auditor: %v, want 403", err)
	}
	if orders, _, _ := w.Authority.TerminateOrdersSince(0, []string{api.TierProduction}); len(orders) != 0 {
		t.Fatalf("a refused termination sent orders: %+v", orders)
	}
	assertAudit(t, w, func(e store.AuditEvent) bool {
		return e.Type == api.EventSessionTerminate && e.Actor == "eve" && e.Subject == id && e.Outcome == "refused"
	})
	// The session goes on: its connection was not ended.
	for _, conn := range a.srv.liveConns() {
		if strings.HasPrefix(id, conn.id+"-") && conn.ctx.Err() != nil {
			t.Fatalf("a refused termination ended the session: %v", context.Cause(conn.ctx))
		}
	}

	resp, err := auditor.Terminate(ctx, id, req)
	if err != nil {
		t.Fatalf("terminate by an auditor: %v", err)
	}
	if resp.By != "audrey" || resp.SessionID != id {
		t.Fatalf("response %+v", resp)
	}
	out, errOut, err := wait()
	if !strings.Contains(out, "started") || strings.Contains(out, "not-ended") {
		t.Fatalf("the session was not ended: %q %q", out, errOut)
	}
	want := "sshward: session ended: terminated by audrey: INC-42 copying customer data"
	if !strings.Contains(errOut, want) {
		t.Fatalf("the user was not told who and why: stderr %q, want %q", errOut, want)
	}
	if code := exitCode(err); code != ExitTerminated {
		t.Errorf("ssh exit status %d, want %d", code, ExitTerminated)
	}
	assertAudit(t, w, func(e store.AuditEvent) bool {
		return e.Type == api.EventSessionTerminate && e.Actor == "audrey" && e.Subject == id && e.Outcome == "ok" &&
			e.Reason == req.Reason && e.Details["host"] == "web1"
	})
	al.find(t, func(e AuditEvent) bool {
		return e.Action == AuditSessionTerminated && e.SessionID == id && strings.Contains(e.Detail, "audrey")
	})
	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.SessionID == id })
	if m.EndReason != "terminated by audrey: INC-42 copying customer data" {
		t.Errorf("recording end reason %q", m.EndReason)
	}
	_, evs := readCast(t, castPath(SpoolDir(a.dataDir), id))
	found := false
	for _, mk := range recordertest.Markers(evs) {
		found = found || strings.Contains(mk, "terminated by audrey: INC-42 copying customer data")
	}
	if !found {
		t.Errorf("no marker with the reason: %q", recordertest.Markers(evs))
	}
}

// TestTerminateOrderForged: orders that did not come from the CA's host
// CA key, or that are stale or for another host, end nothing, whatever
// channel delivers them; the CA's own order does.
func TestTerminateOrderForged(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := catest.New(t, catest.Options{Policy: noMFAPolicy(t)})
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	k, _ := issueReal(t, w, c.home, login)
	wait := liveSession(t, c, a, k, login)
	rec := a.logs.find(t, map[string]string{"msg": "agent: session started", "key_id": k.cert.KeyId})
	id := fmt.Sprint(rec["session_id"])
	now := time.Now()
	order := func(signer ssh.Signer, host string, issued time.Time, nonce string) api.RevocationEvent {
		o := api.TerminateOrder{SessionID: id, Host: host, Tier: api.TierProduction, By: "mallory", Reason: "forged",
			IssuedAt: issued, Expires: issued.Add(api.TerminateOrderTTL), Nonce: nonce}
		if err := o.Sign(rand.Reader, signer); err != nil {
			t.Fatal(err)
		}
		return api.RevocationEvent{Type: api.EventTerminate, Terminate: &o}
	}
	var saved time.Time
	forged := []struct {
		name string
		ev   api.RevocationEvent
	}{
		{"signed by another key", order(catest.NewSigner(t), "web1", now, "n1")},
		{"signed by the tier's user CA key", order(w.UserCAs[api.TierProduction], "web1", now, "n2")},
		{"expired order of the CA", order(w.HostCA, "web1", now.Add(-2*api.TerminateOrderTTL), "n3")},
		{"the CA's order for another host", order(w.HostCA, "db1", now, "n4")},
	}
	for _, f := range forged {
		a.srv.applyRevocationEvent(context.Background(), f.ev, &saved)
	}
	tampered := order(w.HostCA, "web1", now, "n5")
	tampered.Terminate.Reason = "tampered after signing"
	a.srv.applyRevocationEvent(context.Background(), tampered, &saved)
	// Still running: a command on the same connection would have been
	// refused; the connection is live and its context not ended.
	for _, conn := range a.srv.liveConns() {
		if strings.HasPrefix(id, conn.id+"-") && conn.ctx.Err() != nil {
			t.Fatalf("a forged order ended the session: %v", context.Cause(conn.ctx))
		}
	}
	if n := strings.Count(a.logs.String(), "agent: terminate order ignored"); n != 4 {
		t.Errorf("%d orders logged as ignored, want 4 (the other host's order is not this host's business)", n)
	}
	if strings.Contains(a.logs.String(), "mallory") {
		t.Errorf("the agent logged what an unverified order says")
	}
	// The CA's genuine order ends it.
	a.srv.applyRevocationEvent(context.Background(), order(w.HostCA, "web1", now, "n6"), &saved)
	out, errOut, _ := wait()
	if strings.Contains(out, "not-ended") || !strings.Contains(errOut, "terminated by mallory: forged") {
		t.Fatalf("the genuine order did not end the session: %q %q", out, errOut)
	}
}

func assertAudit(t *testing.T, w *catest.CA, match func(store.AuditEvent) bool) {
	t.Helper()
	evs, err := w.Store.Audit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if match(e) {
			return
		}
	}
	t.Fatalf("no matching CA audit event in %+v", evs)
}

// TestTerminateLockUser: --lock-user ends the session and disables the
// user at the CA (no login, the certificates they hold revoked) until an
// administrator enables them.
func TestTerminateLockUser(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := catest.New(t, catest.Options{Policy: noMFAPolicy(t)})
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	ctx := context.Background()
	w.AddUser(t, "audrey", "correct horse battery", []string{"auditors"}, false)
	auditor := w.Client(t, w.ReaderToken(t, w.Login(t, "audrey", "correct horse battery", "")))
	k, _ := issueReal(t, w, c.home, login)
	wait := liveSession(t, c, a, k, login)
	id := fmt.Sprint(a.logs.find(t, map[string]string{"msg": "agent: session started", "key_id": k.cert.KeyId})["session_id"])
	resp, err := auditor.Terminate(ctx, id, api.TerminateRequest{Reason: "account compromised", LockUser: true,
		Host: "web1", Tier: api.TierProduction, User: login, Serial: k.cert.Serial})
	if err != nil || !resp.Locked {
		t.Fatalf("terminate with lock: %+v %v", resp, err)
	}
	out, errOut, _ := wait()
	if strings.Contains(out, "not-ended") || !strings.Contains(errOut, "sshward: session ended:") {
		t.Fatalf("session not ended: %q %q", out, errOut)
	}
	_, err = w.Client(t, "").Login(ctx, api.LoginRequest{User: login, Password: "correct horse battery"})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("a locked user logged in: %v", err)
	}
	if out, _, err := c.run(k, login, nil, "echo logged-in"); err == nil || strings.Contains(out, "logged-in") {
		t.Fatalf("a locked user's certificate opened a session")
	}
	assertAudit(t, w, func(e store.AuditEvent) bool {
		return e.Type == "user.disable" && e.Subject == login && e.Actor == "audrey" && strings.Contains(e.Reason, "account compromised")
	})
	if err := w.Authority.EnableUser(ctx, login, "admin"); err != nil {
		t.Fatal(err)
	}
	w.Login(t, login, "correct horse battery", "") // unlocked
}

var _ = ca.ErrMayNotTerminate
