package ca_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/oncall"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

// onCallTestPolicy: oncall-prod only for whoever is on call; prod-ro
// (read-only production) needs one approval, none for the person on call.
const onCallTestPolicy = `tiers:
  production:
    ttl: 15m
    principals: {sre: ["{{user}}"]}
    end_session_on_expiry: true
  oncall-prod:
    trusted_on: [production]
    ttl: 4h
    max_ttl: 12h
    requires_oncall: true
    principals: {sre: ["{{user}}"]}
    end_session_on_expiry: true
  prod-ro:
    trusted_on: [production]
    ttl: 1h
    approvals: 1
    approvers: [incident-commanders]
    oncall_approvals: 0
    principals: {sre: [readonly]}
    end_session_on_expiry: true
`

// onCallWorld is a real CA over HTTPS on an injected clock with a schedule
// file made from that clock: alice is on call from base-1h to base+3h, bob
// from base+3h to base+7h (base: the clock at the start, whole minute).
type onCallWorld struct {
	ca                      *catest.CA
	clk                     *clock
	base                    time.Time
	schedule                string // path
	alice, bob, mallory, ic *client.Client
	dir                     string
}

func newOnCallWorld(t *testing.T) *onCallWorld {
	t.Helper()
	clk := &clock{}
	base := clk.Now().UTC().Truncate(time.Minute)
	path := filepath.Join(t.TempDir(), "oncall.yaml")
	sched := fmt.Sprintf("rotations:\n  sre-primary:\n    members: [alice, bob]\n    start: %s\n    shift: 4h\n",
		base.Add(-time.Hour).Format(time.RFC3339))
	if err := os.WriteFile(path, []byte(sched), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := oncall.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	w := &onCallWorld{clk: clk, base: base, schedule: path, dir: t.TempDir()}
	w.ca = catest.New(t, catest.Options{Policy: []byte(onCallTestPolicy), Now: clk.Now, OnCall: f,
		OnCallLoop: &ca.OnCallLoop{Tick: 10 * time.Millisecond}})
	for _, u := range []string{"alice", "bob", "mallory"} {
		w.ca.AddUser(t, u, pw, []string{"sre"}, false) // mallory: sre, but in no rotation
	}
	w.ca.AddUser(t, "ivy", pw, []string{"incident-commanders"}, false)
	w.alice = w.ca.Client(t, w.ca.Login(t, "alice", pw, ""))
	w.bob = w.ca.Client(t, w.ca.Login(t, "bob", pw, ""))
	w.mallory = w.ca.Client(t, w.ca.Login(t, "mallory", pw, ""))
	w.ic = w.ca.Client(t, w.ca.Login(t, "ivy", pw, ""))
	return w
}

// cert asks for a certificate of tier and returns it parsed.
func (w *onCallWorld) cert(t *testing.T, c *client.Client, req api.CertRequest) (*ssh.Certificate, error) {
	t.Helper()
	_, pub := keyPair(t, w.dir, fmt.Sprintf("k%d", time.Now().UnixNano()))
	req.PublicKey = pub
	resp, err := c.Cert(context.Background(), req)
	if err != nil {
		return nil, err
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ssh.Certificate), nil
}

// revokedWithNotice waits (bounded) until serial is in the revocation log
// and returns its stream event.
func (w *onCallWorld) revokedWithNotice(t *testing.T, serial uint64) api.RevocationEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, _, _, err := w.ca.Authority.RevocationsSince(context.Background(), nil, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Serial == serial {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial %d not revoked in %+v", serial, evs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isRevoked(t *testing.T, w *onCallWorld, serial uint64) bool {
	t.Helper()
	evs, _, _, err := w.ca.Authority.RevocationsSince(context.Background(), nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(evs, func(e api.RevocationEvent) bool { return e.Serial == serial })
}

func shiftEndEvents(t *testing.T, w *onCallWorld) []store.AuditEvent {
	t.Helper()
	evs, err := w.ca.Store.Audit(context.Background(), store.AuditFilter{Type: ca.EventOnCallShiftEnd})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func wantOnCallRefusal(t *testing.T, err error, code, text string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != code || !strings.Contains(ae.Message, text) {
		t.Fatalf("got %v, want %s refusal mentioning %q", err, code, text)
	}
}

// TestOnCallCertificates: the whole life of an on-call certificate at the
// CA, on any date (the schedule is written from the injected clock).
func TestOnCallCertificates(t *testing.T) {
	w := newOnCallWorld(t)
	ctx := context.Background()
	aliceEnd := w.base.Add(3 * time.Hour)

	// On call: capped at the shift end (the tier's 4h would outlast it),
	// and marked so that hosts can say why the session ends.
	c, err := w.cert(t, w.alice, api.CertRequest{Tier: "oncall-prod"})
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Unix(int64(c.ValidBefore), 0); !got.Equal(aliceEnd) {
		t.Fatalf("valid before %s, want the shift end %s", got.UTC(), aliceEnd)
	}
	if got := c.Extensions[api.ExtOnCallUntil]; got != aliceEnd.Format(time.RFC3339) {
		t.Fatalf("%s = %q", api.ExtOnCallUntil, got)
	}
	issued, err := w.ca.Store.Audit(ctx, store.AuditFilter{Type: "cert.issue"})
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(issued, func(e store.AuditEvent) bool { return e.Serial == c.Serial }); i < 0 ||
		issued[i].Details["oncall_shift_end"] != aliceEnd.Format(time.RFC3339) || issued[i].Details["oncall_rotation"] != "sre-primary" {
		t.Fatalf("cert.issue audit does not name the shift: %+v", issued)
	}

	// Attackers and bystanders, refused with the reason and audited.
	refusals := []struct {
		name string
		c    *client.Client
		want string
	}{
		{"bob is in the rotation but not on call yet", w.bob, "tier oncall-prod is only for whoever is on call, and bob is not on call now"},
		{"mallory is in the right group but in no rotation", w.mallory, "mallory is not on call now"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			_, err := w.cert(t, r.c, api.CertRequest{Tier: "oncall-prod"})
			wantOnCallRefusal(t, err, api.CodeForbidden, r.want)
		})
	}
	if _, err := w.cert(t, w.mallory, api.CertRequest{Tier: "oncall-prod", TTL: api.Duration(time.Minute)}); err == nil {
		t.Fatal("a short ttl got mallory in")
	}
	audit, err := w.ca.Store.Audit(ctx, store.AuditFilter{Type: "cert.issue"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(audit, func(e store.AuditEvent) bool {
		return e.Actor == "mallory" && e.Outcome == store.OutcomeRefused && strings.Contains(e.Reason, "not on call")
	}) {
		t.Fatal("mallory's refusal is not in the audit log")
	}

	// The shift ends: the CA's loop revokes alice's certificate with a
	// notice for her live sessions, and one audit event says why.
	if isRevoked(t, w, c.Serial) {
		t.Fatal("revoked during the shift")
	}
	w.clk.Advance(aliceEnd.Sub(w.clk.Now()) + time.Second)
	ev := w.revokedWithNotice(t, c.Serial)
	if want := api.OnCallEndedMessage(aliceEnd); ev.Notice != want || ev.Tier != "oncall-prod" {
		t.Fatalf("revoke event %+v, want notice %q", ev, want)
	}
	if !strings.Contains(ev.Notice, "your on-call shift ended at "+aliceEnd.Format("2006-01-02 15:04 UTC")) {
		t.Fatalf("notice %q", ev.Notice)
	}
	// A host that polls (or reconnects to a snapshot) gets the notice too.
	list, err := w.ca.Authority.HostRevocations(ctx, "production")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(list.Serials, c.Serial) || list.Notices[c.Serial] != ev.Notice {
		t.Fatalf("production hosts' list: serials %v, notices %v", list.Serials, list.Notices)
	}
	ends := shiftEndEvents(t, w)
	if len(ends) != 1 || ends[0].Subject != "alice" || ends[0].Details["serials"] != fmt.Sprint(c.Serial) ||
		ends[0].Details["shift_end"] != aliceEnd.Format(time.RFC3339) || ends[0].Details["rotation"] != "sre-primary" ||
		ends[0].Details["shift_start"] != w.base.Add(-time.Hour).Format(time.RFC3339) {
		t.Fatalf("shift end audit = %+v", ends)
	}

	// Alice tries to renew after her shift: refused; bob's shift runs now.
	_, err = w.cert(t, w.alice, api.CertRequest{Tier: "oncall-prod"})
	wantOnCallRefusal(t, err, api.CodeForbidden, "alice is not on call now")
	b, err := w.cert(t, w.bob, api.CertRequest{Tier: "oncall-prod"})
	if err != nil {
		t.Fatal(err)
	}
	bobEnd := w.base.Add(7 * time.Hour)
	if !time.Unix(int64(b.ValidBefore), 0).Equal(bobEnd) {
		t.Fatalf("bob's certificate ends %s, want %s", time.Unix(int64(b.ValidBefore), 0).UTC(), bobEnd)
	}

	// The CA is down at bob's shift end and comes back after it: it
	// recomputes from its store and revokes at start.
	w.ca.Stop(t)
	w.clk.Advance(bobEnd.Sub(w.clk.Now()) + 30*time.Second)
	w.ca.Start(t)
	ev = w.revokedWithNotice(t, b.Serial)
	if ev.Notice != api.OnCallEndedMessage(bobEnd) {
		t.Fatalf("after a restart: %+v", ev)
	}
	if ends := shiftEndEvents(t, w); len(ends) != 2 || ends[1].Subject != "bob" || ends[1].Details["serials"] != fmt.Sprint(b.Serial) {
		t.Fatalf("shift end audit after restart = %+v", ends)
	}
	// Nothing is revoked twice when the loop runs again.
	w.ca.Authority.KickOnCall()
	time.Sleep(50 * time.Millisecond)
	if ends := shiftEndEvents(t, w); len(ends) != 2 {
		t.Fatalf("a second sweep audited again: %+v", ends)
	}
	if rep, err := w.ca.Store.VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain: %+v %v", rep, err)
	}
}

// TestOnCallReadOnlyAutoApproves: read-only production needs one approval,
// except for the person on call during their shift, whose request is
// approved at once (and whose certificate ends with the shift).
func TestOnCallReadOnlyAutoApproves(t *testing.T) {
	w := newOnCallWorld(t)
	ctx := context.Background()
	aliceEnd := w.base.Add(3 * time.Hour)

	// During alice's shift: approved at once, by the rotation.
	r, err := w.alice.CreateRequest(ctx, api.CreateRequest{Tier: "prod-ro", Reason: "look at the queue"})
	if err != nil {
		t.Fatal(err)
	}
	if r.State != api.StateApproved || r.ApprovalsNeeded != 0 {
		t.Fatalf("on-call request = %+v, want approved with 0 approvals", r)
	}
	c, err := w.cert(t, w.alice, api.CertRequest{Tier: "prod-ro", RequestID: r.ID})
	if err != nil {
		t.Fatal(err)
	}
	if !time.Unix(int64(c.ValidBefore), 0).Before(aliceEnd.Add(time.Second)) || c.Extensions[api.ExtOnCallUntil] == "" {
		t.Fatalf("auto-approved certificate not tied to the shift: valid before %s, %v", time.Unix(int64(c.ValidBefore), 0).UTC(), c.Extensions)
	}
	// Without a request too: the waiver stands in for the approval.
	if _, err := w.cert(t, w.alice, api.CertRequest{Tier: "prod-ro"}); err != nil {
		t.Fatalf("on call, no request: %v", err)
	}
	created, err := w.ca.Store.Audit(ctx, store.AuditFilter{Type: ca.EventRequestCreate})
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 1 || created[0].Details["approved_by"] != "on-call rotation sre-primary" || created[0].Details["state"] != api.StateApproved {
		t.Fatalf("request.create audit = %+v", created)
	}

	// Bob, off call now: the same request needs an approver.
	_, err = w.cert(t, w.bob, api.CertRequest{Tier: "prod-ro"})
	wantOnCallRefusal(t, err, api.CodeForbidden, "needs an access request approved by 1")
	r2, err := w.bob.CreateRequest(ctx, api.CreateRequest{Tier: "prod-ro", Reason: "look at the queue"})
	if err != nil {
		t.Fatal(err)
	}
	if r2.State != api.StatePending || r2.ApprovalsNeeded != 1 {
		t.Fatalf("off-call request = %+v, want pending, 1 approval", r2)
	}
	_, err = w.cert(t, w.bob, api.CertRequest{Tier: "prod-ro", RequestID: r2.ID})
	wantOnCallRefusal(t, err, api.CodeForbidden, "has 0 of 1 approvals")
	if _, err := w.ic.ApproveRequest(ctx, r2.ID, "ok"); err != nil {
		t.Fatal(err)
	}
	c2, err := w.cert(t, w.bob, api.CertRequest{Tier: "prod-ro", RequestID: r2.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, tied := c2.Extensions[api.ExtOnCallUntil]; tied {
		t.Fatal("a certificate approved by a person is tied to a shift")
	}

	// Half an hour before her shift ends alice gets read-only access
	// again: it ends with the shift, not an hour later.
	w.clk.Advance(aliceEnd.Add(-30 * time.Minute).Sub(w.clk.Now()))
	r3, err := w.alice.CreateRequest(ctx, api.CreateRequest{Tier: "prod-ro", Reason: "later"})
	if err != nil || r3.State != api.StateApproved || !r3.ExpiresAt.Equal(aliceEnd) {
		t.Fatalf("late on-call request: %+v %v", r3, err)
	}
	c3, err := w.cert(t, w.alice, api.CertRequest{Tier: "prod-ro", RequestID: r3.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Unix(int64(c3.ValidBefore), 0); !got.Equal(aliceEnd) {
		t.Fatalf("late read-only certificate ends %s, want the shift end %s", got.UTC(), aliceEnd)
	}
	r4, err := w.alice.CreateRequest(ctx, api.CreateRequest{Tier: "prod-ro", Reason: "unused"})
	if err != nil {
		t.Fatal(err)
	}
	// The shift ends: her approval by the rotation is gone, her
	// certificate revoked; bob's, approved by a person, stays.
	w.clk.Advance(aliceEnd.Sub(w.clk.Now()) + time.Second)
	if ev := w.revokedWithNotice(t, c3.Serial); ev.Notice != api.OnCallEndedMessage(aliceEnd) {
		t.Fatalf("revoke event %+v", ev)
	}
	_, err = w.cert(t, w.alice, api.CertRequest{Tier: "prod-ro", RequestID: r4.ID})
	if err == nil {
		t.Fatal("an on-call approval outlived the shift")
	}
	if isRevoked(t, w, c2.Serial) {
		t.Fatal("the shift end revoked a certificate a person approved")
	}
}

// TestOnCallNeedsSchedule: a policy that uses the schedule without one is
// refused at start.
func TestOnCallNeedsSchedule(t *testing.T) {
	st := storetest.MustOpen(t)
	pol, err := policy.Parse([]byte(onCallTestPolicy))
	if err != nil {
		t.Fatal(err)
	}
	signers := map[string]ssh.Signer{}
	for _, tier := range pol.Tiers {
		signers[tier.Name] = catest.NewSigner(t)
	}
	_, err = ca.New(ca.Config{Store: st, Policy: pol, UserCAs: signers, HostCA: catest.NewSigner(t)})
	if err == nil || !strings.Contains(err.Error(), "oncall_schedule") {
		t.Fatalf("New without a schedule = %v", err)
	}
}
