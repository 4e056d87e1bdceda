package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/oncall"
	"github.com/sshward/sshward/ca/store"
)

// onCallE2EPolicy: production hosts also trust oncall-prod, a tier only
// for whoever is on call (no MFA, so the test logs in with a password).
const onCallE2EPolicy = `tiers:
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
`

// issueOnCall logs user in and asks the real CA for an oncall-prod
// certificate for a fresh key written under dir.
func issueOnCall(t *testing.T, w *catest.CA, dir, user string) (*userKey, error) {
	t.Helper()
	ctx := context.Background()
	if _, err := w.Authority.AddUser(ctx, ca.AddUserRequest{Name: user, Password: "correct horse battery", Groups: []string{"sre"}}); err != nil && !errors.Is(err, ca.ErrUserExists) {
		t.Fatal(err)
	}
	tok := w.Login(t, user, "correct horse battery", "")
	k := mint(t, dir, newSigner(t), ssh.Certificate{ValidBefore: ssh.CertTimeInfinity}, nil)
	resp, err := w.Client(t, tok).Cert(ctx, api.CertRequest{Tier: "oncall-prod", PublicKey: string(ssh.MarshalAuthorizedKey(k.signer.PublicKey()))})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.certPath, []byte(resp.Certificate), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	k.cert = pub.(*ssh.Certificate)
	return k, nil
}

// TestOnCallShiftEndsLiveSession: real CA over HTTPS and its shift-end
// loop on an injected clock, a real agent on a production host on the
// same clock, stock OpenSSH ssh. The login is on call for 4 hours in
// every 8 (a two-person rotation written from the clock, so any date
// works). A live session ends with the shift and says so; the certificate
// opens nothing afterwards; the CA's audit names the shift and serial.
// Then the same with the CA down at the shift end and back after it.
func TestOnCallShiftEndsLiveSession(t *testing.T) {
	catest.NeedOpenSSH(t)
	clk := &testClock{}
	base := clk.now().UTC().Truncate(time.Minute)
	login := currentUser(t)
	path := filepath.Join(t.TempDir(), "oncall.yaml")
	sched := fmt.Sprintf("rotations:\n  sre-primary:\n    members: [%s, someone-else]\n    start: %s\n    shift: 4h\n",
		login, base.Add(-time.Hour).Format(time.RFC3339))
	if err := os.WriteFile(path, []byte(sched), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := oncall.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	w := catest.New(t, catest.Options{Policy: []byte(onCallE2EPolicy), Now: clk.now, OnCall: f,
		OnCallLoop: &ca.OnCallLoop{Tick: 20 * time.Millisecond}, RevocationHeartbeat: 50 * time.Millisecond})
	al := &auditLog{}
	// The host's clock runs 45 seconds late (within the minute the CA
	// backdates certificates by): when the shift ends, the certificate is
	// still valid by the host's clock, and only the revocation ends it.
	// Its API client signs with that clock too.
	hostNow := func() time.Time { return clk.now().Add(-45 * time.Second) }
	cl, err := client.New(client.Config{URL: w.URL, Fingerprint: w.Fingerprint, Now: hostNow})
	if err != nil {
		t.Fatal(err)
	}
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction, cfg: func(c *Config) {
		withAudit(al)(c)
		c.Now, c.CA = hostNow, cl
	}})
	c := realSSHClient(t, w, a)
	ctx := context.Background()

	tests := []struct {
		name      string
		shiftEnd  time.Time
		caDown    bool // the CA is stopped before the shift end, started after
		advanceTo time.Time
	}{
		{name: "shift ends while the CA runs", shiftEnd: base.Add(3 * time.Hour)},
		{name: "CA down at the shift end, back after it", shiftEnd: base.Add(11 * time.Hour), caDown: true,
			advanceTo: base.Add(7*time.Hour + time.Minute)}, // the login's next shift
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.advanceTo.IsZero() {
				clk.advance(tt.advanceTo.Sub(clk.now()))
				// Hours passed on the host's clock: its revocation list is
				// stale until the next heartbeat confirms it.
				waitHeard(t, a, hostNow())
			}
			k, err := issueOnCall(t, w, c.home, login)
			if err != nil {
				t.Fatal(err)
			}
			if got := time.Unix(int64(k.cert.ValidBefore), 0); !got.Equal(tt.shiftEnd) {
				t.Fatalf("certificate valid before %s, want the shift end %s", got.UTC(), tt.shiftEnd)
			}
			wait := liveSession(t, c, a, k, login)
			if tt.caDown {
				w.Stop(t)
			}
			clk.advance(tt.shiftEnd.Sub(clk.now()) + time.Second)
			passed := time.Now()
			if tt.caDown {
				w.Start(t)
			}
			out, errOut, err := wait()
			// Logged, not asserted (no wall-clock asserts in tests).
			t.Logf("%s: shift end passed → live ssh session ended in %s", tt.name, time.Since(passed).Round(time.Millisecond))
			if err == nil || !strings.Contains(out, "started") || strings.Contains(out, "not-ended") {
				a.logs.mu.Lock()
				defer a.logs.mu.Unlock()
				t.Fatalf("live session not ended: %v %q %q; log:\n%s", err, out, errOut, a.logs.buf.String())
			}
			want := "sshward: session ended: your on-call shift ended at " + tt.shiftEnd.Format("2006-01-02 15:04 UTC")
			if !strings.Contains(errOut, want) {
				t.Fatalf("the user was not told why: stderr %q, want %q", errOut, want)
			}
			al.find(t, func(e AuditEvent) bool {
				return e.Action == AuditSessionEnd && e.Serial == k.cert.Serial && e.Reason == "certificate revoked"
			})
			evs, err := w.Store.Audit(ctx, store.AuditFilter{Type: ca.EventOnCallShiftEnd})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, e := range evs {
				found = found || e.Subject == login && e.Details["serials"] == fmt.Sprint(k.cert.Serial) &&
					e.Details["shift_end"] == tt.shiftEnd.Format(time.RFC3339) && e.Details["rotation"] == "sre-primary"
			}
			if !found {
				t.Fatalf("no %s audit event for serial %d: %+v", ca.EventOnCallShiftEnd, k.cert.Serial, evs)
			}
			// The certificate opens nothing any more, though the late
			// host's clock still finds it valid: it is revoked.
			if out, errOut, err := c.run(k, login, nil, "echo logged-in"); err == nil || strings.Contains(out, "logged-in") {
				t.Fatalf("certificate of an ended shift logged in: %q %q", out, errOut)
			}
			al.find(t, func(e AuditEvent) bool {
				return e.Action == AuditAdmissionRefused && e.Serial == k.cert.Serial && e.Reason == reasonRevoked
			})
			// Renewing after the shift is refused at the CA, with the reason.
			_, err = issueOnCall(t, w, c.home, login)
			var ae *api.Error
			if !errors.As(err, &ae) || !strings.Contains(ae.Message, "is not on call now") {
				t.Fatalf("renewal after the shift: %v", err)
			}
		})
	}
}

// waitHeard waits (bounded) until the agent heard from the CA at or after t.
func waitHeard(t *testing.T, a *testAgent, at time.Time) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r := a.srv.revs.Load(); r != nil && !r.heardAt.Before(at) {
			return
		}
		if time.Now().After(deadline) {
			a.logs.mu.Lock()
			defer a.logs.mu.Unlock()
			t.Fatalf("the agent did not hear from the CA since %s (heard %+v); log:\n%s", at, a.srv.revs.Load().heardAt, a.logs.buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEndNotice: what a user reads when a session ends, and that a notice
// from the CA cannot drive the terminal.
func TestEndNotice(t *testing.T) {
	end := time.Date(2030, 1, 2, 18, 0, 0, 0, time.UTC) // formatted only
	onCall := &ssh.Certificate{Serial: 7, Permissions: ssh.Permissions{Extensions: map[string]string{api.ExtOnCallUntil: end.Format(time.RFC3339)}}}
	plain := &ssh.Certificate{Serial: 8}
	revs, _ := newRevocations(api.RevocationList{}, time.Time{}).with(api.RevocationEvent{Type: api.EventRevoke, Seq: 1, Tier: "t", Serial: 7,
		Notice: "your on-call shift ended\x1b]0;pwned\x07 at 18:00\r\n" + strings.Repeat("x", 400)}, time.Time{})
	revs, _ = revs.with(api.RevocationEvent{Type: api.EventRevoke, Seq: 2, Tier: "t", Serial: 8}, time.Time{})
	tests := []struct {
		name  string
		cause error
		want  string
		base  error
	}{
		{"expiry of an on-call certificate names the shift", expiredCause(onCall),
			"sshward: session ended: your on-call shift ended at 2030-01-02 18:00 UTC, and the access it granted ended with it", ErrCertExpired},
		{"expiry of another certificate", expiredCause(plain), "sshward: session ended: your certificate expired.", ErrCertExpired},
		{"revocation with the CA's notice, cleaned", revokedCause(revs, onCall), "sshward: session ended: your on-call shift ended ]0;pwned", ErrCertRevoked},
		{"revocation without a notice", revokedCause(revs, plain), "sshward: session ended: your certificate was revoked.", ErrCertRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := endMessage(tt.cause)
			if !strings.HasPrefix(msg, tt.want) || !errors.Is(tt.cause, tt.base) {
				t.Fatalf("endMessage = %q, want prefix %q (cause %v)", msg, tt.want, tt.cause)
			}
			if strings.ContainsAny(msg, "\x1b\x07\r\n") || len(msg) > len("sshward: session ended: ")+maxNoticeBytes {
				t.Fatalf("unsafe or unbounded message %q", msg)
			}
		})
	}
	// A later event keeps the notices learnt before, and so does a
	// snapshot that brings its own (a host that polled after a CA restart).
	if revs.list.Notices[7] == "" {
		t.Fatal("a later revocation dropped an earlier notice")
	}
	snap, _ := revs.merge(api.RevocationList{Serials: []uint64{9}, Notices: map[uint64]string{9: "shift over"}}, time.Time{})
	if snap.list.Notices[7] == "" || endMessage(revokedCause(snap, &ssh.Certificate{Serial: 9})) != "sshward: session ended: shift over" {
		t.Fatalf("merged notices = %v", snap.list.Notices)
	}
}
