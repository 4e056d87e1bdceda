package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
)

// noMFAPolicy is the default policy without MFA on production, so that a
// test can log the same user in many times (TOTP codes are single use per
// 30 s window). Everything revocation depends on is as shipped.
func noMFAPolicy(t testing.TB) []byte {
	t.Helper()
	p := policy.Default()
	const mfa = "mfa: true                # the login must have used TOTP or MFA at the IdP"
	if !bytes.Contains(p, []byte(mfa)) {
		t.Fatal("default policy changed: update noMFAPolicy")
	}
	return bytes.Replace(p, []byte(mfa), []byte("mfa: false"), 1)
}

// issueReal logs user in (adding them when missing) and has the real CA
// issue a production certificate for a fresh key written under dir.
func issueReal(t testing.TB, w *catest.CA, dir, user string) (*userKey, string) {
	t.Helper()
	ctx := context.Background()
	if _, err := w.Authority.AddUser(ctx, ca.AddUserRequest{Name: user, Password: "correct horse battery", Groups: []string{"sre"}}); err != nil && !errors.Is(err, ca.ErrUserExists) {
		t.Fatal(err)
	}
	tok := w.Login(t, user, "correct horse battery", "")
	k := mint(t, dir, newSigner(t), ssh.Certificate{ValidBefore: ssh.CertTimeInfinity}, nil) // a key pair on disk
	resp, err := w.Client(t, tok).Cert(ctx, api.CertRequest{Tier: api.TierProduction, PublicKey: string(ssh.MarshalAuthorizedKey(k.signer.PublicKey()))})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.certPath, []byte(resp.Certificate), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	k.cert = pub.(*ssh.Certificate)
	return k, tok
}

// liveSession starts `ssh host 'echo started; sleep 30; echo not-ended'`
// and returns once the agent admitted it; wait returns stdout, stderr and
// the exit error.
func liveSession(t testing.TB, c *sshClient, a *testAgent, k *userKey, login string) (wait func() (string, string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	cmd := exec.CommandContext(ctx, "ssh", append(c.args(k, login), "echo started; sleep 30; echo not-ended")...)
	cmd.Env = c.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(cancel)
	a.logs.find(t, map[string]string{"msg": "agent: session started", "key_id": k.cert.KeyId})
	return func() (string, string, error) {
		err := <-done
		return out.String(), errb.String(), err
	}
}

// TestRevocationReachesLiveSessions: with the real CA over HTTPS, a real
// agent on the production tier and stock OpenSSH ssh as the user, each way
// an administrator takes access away ends the user's live session with a
// message, refuses the certificate at the next login, and (for a user
// removed or disabled) refuses them at the CA too. The time from the
// administrator's command to the session's end is logged, not asserted
// (make bench measures it).
func TestRevocationReachesLiveSessions(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := catest.New(t, catest.Options{Policy: noMFAPolicy(t)})
	al := &auditLog{}
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction, cfg: withAudit(al)})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		act    func(t *testing.T, k *userKey) error
		atCA   bool // the user is out at the CA too
		enable bool // then enabled again: logs in with a new certificate
	}{
		{name: "revoke by serial", act: func(t *testing.T, k *userKey) error {
			_, err := w.Authority.Revoke(ctx, ca.RevokeRequest{Serial: k.cert.Serial, Reason: "laptop lost"})
			return err
		}},
		{name: "revoke by key id", act: func(t *testing.T, k *userKey) error {
			_, err := w.Authority.Revoke(ctx, ca.RevokeRequest{KeyID: k.cert.KeyId, Reason: "key id"})
			return err
		}},
		{name: "user removed", atCA: true, act: func(t *testing.T, k *userKey) error {
			return w.Authority.RemoveUser(ctx, login, "test")
		}},
		{name: "user disabled", atCA: true, enable: true, act: func(t *testing.T, k *userKey) error {
			_, err := w.Authority.DisableUser(ctx, login, "left the team", "test")
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, tok := issueReal(t, w, c.home, login)
			wait := liveSession(t, c, a, k, login)
			start := time.Now()
			if err := tt.act(t, k); err != nil {
				t.Fatal(err)
			}
			out, errOut, err := wait()
			took := time.Since(start)
			if err == nil || !strings.Contains(out, "started") || strings.Contains(out, "not-ended") {
				t.Fatalf("live session not ended: %v %q %q", err, out, errOut)
			}
			if !strings.Contains(errOut, "sshward: session ended: your certificate was revoked.") {
				t.Errorf("the user was not told why: stderr %q", errOut)
			}
			t.Logf("%s: revoke → live session ended in %s", tt.name, took.Round(time.Millisecond))
			al.find(t, func(e AuditEvent) bool {
				return e.Action == AuditSessionEnd && e.Serial == k.cert.Serial && e.Reason == "certificate revoked"
			})

			// The next login with the same certificate is refused.
			if out, errOut, err := c.run(k, login, nil, "echo logged-in"); err == nil || strings.Contains(out, "logged-in") {
				t.Fatalf("revoked certificate logged in again: %q %q", out, errOut)
			}
			al.find(t, func(e AuditEvent) bool {
				return e.Action == AuditAdmissionRefused && e.Serial == k.cert.Serial && e.Reason == reasonRevoked
			})
			if !tt.atCA {
				return
			}
			// At the CA: the old session cannot fetch a certificate, and
			// the password is refused like a wrong one.
			_, err = w.Client(t, tok).Cert(ctx, api.CertRequest{Tier: api.TierProduction, PublicKey: string(ssh.MarshalAuthorizedKey(k.signer.PublicKey()))})
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != 401 {
				t.Fatalf("certificate for a %s user's session: %v", tt.name, err)
			}
			// The answer is the one a name that never existed gets.
			_, err = w.Client(t, "").Login(ctx, api.LoginRequest{User: login, Password: "correct horse battery"})
			var never *api.Error
			_, errNever := w.Client(t, "").Login(ctx, api.LoginRequest{User: "never-existed", Password: "correct horse battery"})
			if !errors.As(err, &ae) || !errors.As(errNever, &never) || ae.Status != 401 || ae.Code != never.Code || ae.Message != never.Message {
				t.Fatalf("login of a %s user: %v; an unknown name gets %v", tt.name, err, errNever)
			}
			evs, err := w.Store.Audit(ctx, store.AuditFilter{})
			if err != nil {
				t.Fatal(err)
			}
			var revoked, refused bool
			for _, e := range evs {
				revoked = revoked || e.Type == "revoke" && e.Serial == k.cert.Serial && e.Outcome == "ok" && e.Reason != ""
				refused = refused || e.Type == "login" && e.Outcome == "refused" && e.Subject == login &&
					(tt.enable && e.Details["failure"] == "user is disabled" || !tt.enable && e.Details["failure"] == "user or password is wrong (unknown user)")
			}
			if !revoked || !refused {
				t.Errorf("audit: revoke record %v, refused login record with the cause %v", revoked, refused)
			}
			if !tt.enable {
				return
			}
			if err := w.Authority.EnableUser(ctx, login, "test"); err != nil {
				t.Fatal(err)
			}
			k2, _ := issueReal(t, w, c.home, login)
			if out, errOut, err := c.run(k2, login, nil, "echo logged-in"); err != nil || out != "logged-in\n" {
				t.Fatalf("re-enabled user's new certificate: %v %q %q", err, out, errOut)
			}
		})
	}
}

// switchableCA is the agent's real CA client with a switch that makes it
// unreachable, as a network cut: calls fail and an open revocation stream
// breaks.
type switchableCA struct {
	*client.Client
	down  atomic.Bool
	flips chan struct{} // closed and replaced at every setDown(true)
	mu    chan struct{}
}

func newSwitchableCA(cl *client.Client) *switchableCA {
	return &switchableCA{Client: cl, flips: make(chan struct{}), mu: make(chan struct{}, 1)}
}

func (s *switchableCA) setDown(down bool) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	s.down.Store(down)
	if down {
		close(s.flips)
		s.flips = make(chan struct{})
	}
}

func (s *switchableCA) cut() <-chan struct{} {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.flips
}

func (s *switchableCA) HostRevoked(ctx context.Context, tier string, cert *ssh.Certificate, signer ssh.Signer) (*api.RevocationList, error) {
	if s.down.Load() {
		return nil, errCADown
	}
	return s.Client.HostRevoked(ctx, tier, cert, signer)
}

func (s *switchableCA) WatchRevocations(ctx context.Context, req client.WatchRequest, fn func(api.RevocationEvent) error) error {
	if s.down.Load() {
		return errCADown
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func(cut <-chan struct{}) {
		select {
		case <-cut:
			cancel()
		case <-ctx.Done():
		}
	}(s.cut())
	return s.Client.WatchRevocations(ctx, req, fn)
}

// testClock is an injected clock that a test moves forward.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// TestStaleRevocationListRefusesNewSessions: a production host that can
// no longer hear from the CA keeps admitting on its cached list only up
// to the tier's revocation_max_stale (5m by default); past it new
// production sessions are refused with a message naming the cause, and
// they are admitted again as soon as the CA is back. The agent's clock is
// injected and moved, nothing waits minutes.
func TestStaleRevocationListRefusesNewSessions(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := catest.New(t, catest.Options{Policy: noMFAPolicy(t)})
	tok, err := w.Authority.NewJoinToken(context.Background(), ca.JoinTokenRequest{Names: []string{"127.0.0.1", "localhost"}, Tier: api.TierProduction})
	if err != nil {
		t.Fatal(err)
	}
	sw := newSwitchableCA(caClient(t, w))
	clk := &testClock{}
	al := &auditLog{}
	a := startAgent(t, nil, agentOpts{tier: api.TierProduction, noToken: true, cfg: func(c *Config) {
		c.CA, c.JoinToken, c.Now = sw, tok.Token, clk.now
		withAudit(al)(c)
	}})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	k, _ := issueReal(t, w, c.home, login)
	if out, errOut, err := c.run(k, login, nil, "echo logged-in"); err != nil || out != "logged-in\n" {
		t.Fatalf("fresh list: %v %q %q", err, out, errOut)
	}

	sw.setDown(true)
	a.logs.find(t, map[string]string{"msg": "agent: revocation stream ended; polling until it is back"})
	steps := []struct {
		name    string
		advance time.Duration
		admit   bool
	}{
		{"4m without the CA: within the bound", 4 * time.Minute, true},
		{"6m without the CA: past the bound", 2 * time.Minute, false},
	}
	for _, st := range steps {
		clk.advance(st.advance)
		out, errOut, err := c.run(k, login, nil, "echo logged-in")
		if st.admit != (err == nil && out == "logged-in\n") {
			t.Fatalf("%s: admitted=%v, want %v: %q %q", st.name, err == nil, st.admit, out, errOut)
		}
		if st.admit {
			continue
		}
		if !strings.Contains(errOut, "revocation list is 6m") || !strings.Contains(errOut, "the CA could not be reached") {
			t.Errorf("%s: the user was not told the cause: %q", st.name, errOut)
		}
		ev := al.find(t, func(e AuditEvent) bool { return e.Action == AuditAdmissionRefused && e.Reason == reasonRevocationStale })
		if ev.Serial != k.cert.Serial || !strings.Contains(ev.Detail, "tier=production max_stale=5m0s") {
			t.Errorf("%s: audit %+v", st.name, ev)
		}
		for _, e := range al.events() {
			if e.Action == AuditAdmitted && e.Time.After(ev.Time) {
				t.Errorf("%s: admitted after the refusal: %+v", st.name, e)
			}
		}
	}

	// The CA is back: the stream reconnects and the list is fresh again.
	sw.setDown(false)
	a.logs.find(t, map[string]string{"msg": "agent: revocation stream open again"})
	if out, errOut, err := c.run(k, login, nil, "echo logged-in"); err != nil || out != "logged-in\n" {
		t.Fatalf("after the CA came back: %v %q %q", err, out, errOut)
	}
}
