package ca_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/store"
)

// clock is real time plus an offset the test moves forward.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// fakePolicy is a hand-written ApprovalPolicy whose answer a test sets.
type fakePolicy struct {
	mu    sync.Mutex // guards the fields below
	fn    func(context.Context, ca.AccessRequestInfo) (ca.PolicyDecision, error)
	calls []ca.AccessRequestInfo
}

func (p *fakePolicy) Review(ctx context.Context, info ca.AccessRequestInfo) (ca.PolicyDecision, error) {
	p.mu.Lock()
	p.calls = append(p.calls, info)
	fn := p.fn
	p.mu.Unlock()
	if fn == nil {
		return ca.PolicyDecision{}, nil
	}
	return fn(ctx, info)
}

func (p *fakePolicy) set(fn func(context.Context, ca.AccessRequestInfo) (ca.PolicyDecision, error)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn, p.calls = fn, nil
}

func (p *fakePolicy) seen() []ca.AccessRequestInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// The cast of the access-request tests, in the default policy's groups.
var reqCast = []struct {
	name   string
	groups []string
	totp   bool
}{
	{"olivia", []string{"oncall"}, true},                      // requester
	{"otto", []string{"oncall", "incident-commanders"}, true}, // requester who could approve others
	{"ian", []string{"incident-commanders"}, true},            // approvers
	{"ivy", []string{"incident-commanders"}, true},            //
	{"iris", []string{"incident-commanders"}, true},           //
	{"ned", []string{"incident-commanders"}, false},           // approver without MFA
	{"nora", []string{"oncall"}, false},                       // requester without MFA
	{"sam", []string{"sre", "engineers"}, true},               // not an approver, not entitled
}

type reqWorld struct {
	ca     *catest.CA
	clock  *clock
	policy *fakePolicy
	dir    string
	users  map[string]*client.Client
	keys   atomic.Int64 // names key files
}

func newReqWorld(t *testing.T) *reqWorld {
	t.Helper()
	w := &reqWorld{clock: &clock{}, policy: &fakePolicy{}, dir: t.TempDir(), users: map[string]*client.Client{}}
	w.ca = catest.New(t, catest.Options{Now: w.clock.Now, ApprovalPolicy: w.policy})
	for _, u := range reqCast {
		sec := w.ca.AddUser(t, u.name, pw, u.groups, u.totp)
		otp := ""
		if u.totp {
			otp = catest.Code(t, sec, w.clock.Now())
		}
		w.users[u.name] = w.ca.Client(t, w.ca.Login(t, u.name, pw, otp))
	}
	return w
}

func (w *reqWorld) create(t *testing.T, who string, req api.CreateRequest) *api.AccessRequest {
	t.Helper()
	if req.Tier == "" {
		req.Tier = api.TierBreakGlass
	}
	if req.Reason == "" {
		req.Reason = "INC-4711 primary database down"
	}
	r, err := w.users[who].CreateRequest(context.Background(), req)
	if err != nil {
		t.Fatalf("%s: request: %v", who, err)
	}
	return r
}

func (w *reqWorld) approve(t *testing.T, id string, who ...string) {
	t.Helper()
	for _, u := range who {
		if _, err := w.users[u].ApproveRequest(context.Background(), id, "ok from "+u); err != nil {
			t.Fatalf("%s approves %s: %v", u, id, err)
		}
	}
}

func (w *reqWorld) get(t *testing.T, who, id string) *api.AccessRequest {
	t.Helper()
	r, err := w.users[who].GetRequest(context.Background(), id)
	if err != nil {
		t.Fatalf("%s: get %s: %v", who, id, err)
	}
	return r
}

// cert asks for a certificate with the access request; it returns the
// certificate and the paths of key and certificate.
func (w *reqWorld) cert(t *testing.T, who string, req api.CertRequest) (*ssh.Certificate, string, string, error) {
	t.Helper()
	if req.Tier == "" {
		req.Tier = api.TierBreakGlass
	}
	key, pub := keyPair(t, w.dir, fmt.Sprintf("%s-%d", who, w.keys.Add(1)))
	req.PublicKey = pub
	resp, err := w.users[who].Cert(context.Background(), req)
	if err != nil {
		return nil, "", "", err
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	certPath := key + "-cert.pub"
	if err := os.WriteFile(certPath, []byte(resp.Certificate), 0o600); err != nil {
		t.Fatal(err)
	}
	return pk.(*ssh.Certificate), key, certPath, nil
}

// wantRefusal checks err is an API refusal with code whose message says say.
func wantRefusal(t *testing.T, err error, code, say string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("want refusal %s (%q), got %v", code, say, err)
	}
	if ae.Code != code || !strings.Contains(ae.Message, say) {
		t.Fatalf("want refusal %s saying %q, got %s: %s", code, say, ae.Code, ae.Message)
	}
}

func TestAccessRequestDualControl(t *testing.T) {
	t.Parallel()
	w := newReqWorld(t)
	type step struct {
		who, do, reason string // do: approve, deny, cert
		code, say       string // expected refusal; "" = success
	}
	closed := api.CodeRequestClosed
	tests := []struct {
		name      string
		requester string
		steps     []step
		state     string
		approvals int
	}{
		{"self-approval refused", "otto", []step{
			{who: "otto", do: "approve", code: api.CodeForbidden, say: "your own request"},
			{who: "ian", do: "approve"},
			{who: "otto", do: "approve", code: api.CodeForbidden, say: "your own request"},
		}, api.StatePending, 1},
		{"non-approver refused", "olivia", []step{
			{who: "sam", do: "approve", code: api.CodeForbidden, say: "incident-commanders"},
		}, api.StatePending, 0},
		{"approver without MFA refused", "olivia", []step{
			{who: "ned", do: "approve", code: api.CodeMFARequired, say: "multi-factor"},
		}, api.StatePending, 0},
		{"same approver twice counts once", "olivia", []step{
			{who: "ian", do: "approve"},
			{who: "ian", do: "approve", code: closed, say: "already approved"},
			{who: "olivia", do: "cert", code: api.CodeForbidden, say: "1 of 2"},
		}, api.StatePending, 1},
		{"one approval of two is not enough", "olivia", []step{
			{who: "ivy", do: "approve"},
			{who: "olivia", do: "cert", code: api.CodeForbidden, say: "wait for 1 more"},
		}, api.StatePending, 1},
		{"two distinct approvers: one certificate, then no more", "olivia", []step{
			{who: "ian", do: "approve"},
			{who: "ivy", do: "approve"},
			{who: "iris", do: "approve", code: closed, say: "already approved"},
			{who: "olivia", do: "cert"},
			{who: "olivia", do: "cert", code: closed, say: "already used"},
		}, api.StateIssued, 2},
		{"deny ends it", "olivia", []step{
			{who: "ian", do: "approve"},
			{who: "ivy", do: "deny", reason: "use the runbook instead"},
			{who: "iris", do: "approve", code: closed, say: "denied by ivy (use the runbook instead)"},
			{who: "olivia", do: "cert", code: closed, say: "denied"},
		}, api.StateDenied, 1},
		{"deny after approval ends it before issuance", "olivia", []step{
			{who: "ian", do: "approve"},
			{who: "ivy", do: "approve"},
			{who: "iris", do: "deny", reason: "stand down, fixed"},
			{who: "olivia", do: "cert", code: closed, say: "denied"},
		}, api.StateDenied, 2},
		{"requester withdraws", "olivia", []step{
			{who: "olivia", do: "deny", reason: "recovered by itself"},
			{who: "ian", do: "approve", code: closed, say: "denied by olivia"},
		}, api.StateDenied, 0},
		{"non-approver cannot deny", "olivia", []step{
			{who: "sam", do: "deny", reason: "no", code: api.CodeForbidden},
		}, api.StatePending, 0},
		{"a denial needs a reason", "olivia", []step{
			{who: "ian", do: "deny", code: api.CodeBadRequest, say: "reason"},
		}, api.StatePending, 0},
		{"someone else's approved request buys nothing", "olivia", []step{
			{who: "ian", do: "approve"},
			{who: "ivy", do: "approve"},
			{who: "otto", do: "cert", code: api.CodeNotFound},
		}, api.StateApproved, 2},
	}
	ctx := context.Background()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := w.create(t, tc.requester, api.CreateRequest{})
			if r.State != api.StatePending || r.ApprovalsNeeded != 2 || !strings.HasPrefix(r.ID, "REQ-") {
				t.Fatalf("new request: %+v", r)
			}
			for i, s := range tc.steps {
				var err error
				switch s.do {
				case "approve":
					_, err = w.users[s.who].ApproveRequest(ctx, r.ID, "")
				case "deny":
					_, err = w.users[s.who].DenyRequest(ctx, r.ID, s.reason)
				case "cert":
					_, _, _, err = w.cert(t, s.who, api.CertRequest{RequestID: r.ID})
				}
				if s.code == "" && err != nil {
					t.Fatalf("step %d (%s %s): %v", i, s.who, s.do, err)
				}
				if s.code != "" {
					wantRefusal(t, err, s.code, s.say)
				}
			}
			got := w.get(t, tc.requester, r.ID)
			if got.State != tc.state || len(got.Approvals) != tc.approvals {
				t.Fatalf("state %s with %d approvals (%v), want %s with %d", got.State, len(got.Approvals), got.ApproverNames(), tc.state, tc.approvals)
			}
			if slices.Contains(got.ApproverNames(), tc.requester) {
				t.Fatalf("the requester counts as an approver: %v", got.ApproverNames())
			}
		})
	}
}

func TestCreateRequestRefusals(t *testing.T) {
	t.Parallel()
	w := newReqWorld(t)
	tests := []struct {
		name, who string
		req       api.CreateRequest
		code, say string
	}{
		{"tier without approvals", "sam", api.CreateRequest{Tier: "staging", Reason: "x"}, api.CodeBadRequest, "needs no approval"},
		{"unknown tier", "olivia", api.CreateRequest{Tier: "root-everywhere", Reason: "x"}, api.CodeUnknownTier, "unknown tier"},
		{"requester not entitled", "sam", api.CreateRequest{Tier: "break-glass", Reason: "x"}, api.CodeForbidden, "oncall"},
		{"requester without MFA", "nora", api.CreateRequest{Tier: "break-glass", Reason: "x"}, api.CodeMFARequired, "multi-factor"},
		{"ttl above the tier's max", "olivia", api.CreateRequest{Tier: "break-glass", Reason: "x", TTL: api.Duration(11 * time.Minute)}, api.CodeTTL, "10m"},
		{"principal not granted", "olivia", api.CreateRequest{Tier: "break-glass", Reason: "x", Principals: []string{"olivia"}}, api.CodePrincipal, "olivia"},
		{"no reason", "olivia", api.CreateRequest{Tier: "break-glass"}, api.CodeBadRequest, "reason is required"},
		{"control characters in the reason", "olivia", api.CreateRequest{Tier: "break-glass", Reason: "INC-1\x1b]0;owned\x07"}, api.CodeBadRequest, "control characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.users[tc.who].CreateRequest(context.Background(), tc.req)
			wantRefusal(t, err, tc.code, tc.say)
		})
	}
	// Refusals are audited as such.
	evs, err := w.ca.Store.Audit(context.Background(), store.AuditFilter{Type: ca.EventRequestCreate})
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range evs {
		if e.Outcome == store.OutcomeRefused && e.Reason != "" && e.Actor != "" {
			refused++
		}
	}
	if refused != len(tests) {
		t.Fatalf("%d refused request.create events, want %d", refused, len(tests))
	}
}

func TestRequestVisibility(t *testing.T) {
	t.Parallel()
	w := newReqWorld(t)
	ctx := context.Background()
	r := w.create(t, "olivia", api.CreateRequest{})
	ids := func(who, scope string, all bool) map[string]bool {
		t.Helper()
		rs, err := w.users[who].ListRequests(ctx, scope, all)
		if err != nil {
			t.Fatalf("%s lists %s: %v", who, scope, err)
		}
		out := map[string]bool{}
		for _, x := range rs {
			out[x.ID] = x.CanApprove
		}
		return out
	}
	tests := []struct {
		name, who, scope string
		listed, can      bool
	}{
		{"requester sees her own", "olivia", api.ScopeMine, true, false},
		{"requester may not approve her own", "olivia", api.ScopeApprovable, false, false},
		{"approver may approve", "ian", api.ScopeApprovable, true, true},
		{"approver who is also oncall may approve others'", "otto", api.ScopeApprovable, true, true},
		{"approver without MFA sees but may not approve", "ned", api.ScopeApprovable, true, false},
		{"outsider sees nothing", "sam", api.ScopeApprovable, false, false},
		{"approvers' own list is theirs only", "ian", api.ScopeMine, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ids(tc.who, tc.scope, false)
			can, listed := got[r.ID]
			if listed != tc.listed || can != tc.can {
				t.Fatalf("listed=%v can_approve=%v, want %v %v", listed, can, tc.listed, tc.can)
			}
		})
	}
	if _, err := w.users["sam"].GetRequest(ctx, r.ID); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("outsider reads a request: %v", err)
	}
	if got := w.get(t, "ian", strings.ToLower(r.ID)); got.ID != r.ID || !got.CanApprove {
		t.Fatalf("lower-case id: %+v", got)
	}
	w.approve(t, r.ID, "ian")
	if got := w.get(t, "ian", r.ID); got.CanApprove {
		t.Fatal("ian may approve twice")
	}
	if _, ok := ids("ivy", api.ScopeApprovable, false)[r.ID]; !ok {
		t.Fatal("a half-approved request left ivy's list")
	}
	w.approve(t, r.ID, "ivy")
	if _, ok := ids("iris", api.ScopeApprovable, false)[r.ID]; ok {
		t.Fatal("an approved request is still listed as pending for approvers")
	}
	if _, ok := ids("iris", api.ScopeApprovable, true)[r.ID]; !ok {
		t.Fatal("all=true hides decided requests from approvers")
	}
	// Malformed input.
	var e api.RequestList
	if err := w.users["ian"].Do(ctx, http.MethodGet, api.PathRequests+"?scope=everyone", nil, &e); !api.IsCode(err, api.CodeBadRequest) {
		t.Fatalf("scope=everyone: %v", err)
	}
	if err := w.users["ian"].Do(ctx, http.MethodPost, api.PathRequests, map[string]any{"tier": "break-glass", "reason": "x", "approved": true}, nil); !api.IsCode(err, api.CodeBadRequest) {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := w.users["ian"].ApproveRequest(ctx, "REQ-../../v1/cert", ""); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("path in id: %v", err)
	}
}

func TestBreakGlassCertificate(t *testing.T) {
	catest.NeedOpenSSH(t)
	t.Parallel()
	w := newReqWorld(t)
	ctx := context.Background()
	reason := "INC-4711 primary database down, " + strings.Repeat("é", 150) // 332 bytes
	r := w.create(t, "olivia", api.CreateRequest{Reason: reason})
	w.approve(t, r.ID, "ian", "ivy")
	if got := w.get(t, "olivia", r.ID); got.State != api.StateApproved {
		t.Fatalf("state %s after two approvals", got.State)
	}
	cert, key, certPath, err := w.cert(t, "olivia", api.CertRequest{RequestID: r.ID})
	if err != nil {
		t.Fatal(err)
	}
	now := w.clock.Now()
	vb, va := time.Unix(int64(cert.ValidBefore), 0), time.Unix(int64(cert.ValidAfter), 0)
	if vb.Sub(now) > 10*time.Minute+2*time.Second || vb.Sub(va) > 11*time.Minute {
		t.Fatalf("break-glass cert valid for %v (from now %v): want ≤ 10m", vb.Sub(va), vb.Sub(now))
	}
	ext := cert.Permissions.Extensions
	wantExt := map[string]string{
		api.ExtRequestID: r.ID, api.ExtApprovers: "ian,ivy", api.ExtTier: api.TierBreakGlass,
		api.ExtRecordInput: "yes", api.ExtSingleUse: "", api.ExtReason: api.ExtReasonValue(reason),
	}
	for k, v := range wantExt {
		if got, ok := ext[k]; !ok || got != v {
			t.Errorf("extension %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	if n := len(ext[api.ExtReason]); n > api.MaxExtReasonBytes || n < 250 {
		t.Errorf("reason extension is %d bytes, want the first ≤256", n)
	}
	if !slices.Equal(cert.ValidPrincipals, []string{"root"}) || !strings.Contains(cert.KeyId, "req="+r.ID) {
		t.Errorf("principals %v, key id %q", cert.ValidPrincipals, cert.KeyId)
	}
	if got := w.get(t, "olivia", r.ID); got.State != api.StateIssued || got.IssuedSerial != cert.Serial {
		t.Errorf("after issuance: %s serial %d, want issued %d", got.State, got.IssuedSerial, cert.Serial)
	}

	// Stock sshd: production hosts trust production + break-glass.
	me := catest.CurrentUser(t)
	line := func(tier string) string { return string(ssh.MarshalAuthorizedKey(w.ca.UserCAs[tier].PublicKey())) }
	hosts := []struct {
		name string
		cas  []string
		ok   bool
	}{
		{"production host trusting break-glass", []string{line("production"), line("break-glass")}, true},
		{"staging host", []string{line("staging")}, false},
		{"production host without the break-glass CA", []string{line("production")}, false},
	}
	for _, h := range hosts {
		t.Run(h.name, func(t *testing.T) {
			sshd := catest.StartSSHD(t, catest.SSHDConfig{TrustedUserCAKeys: h.cas, Principals: map[string][]string{me: {"root"}}})
			out, err := catest.SSH(ctx, sshd.Addr, me, key, certPath, nil, "echo", "glass-broken")
			if h.ok && (err != nil || !strings.Contains(out, "glass-broken")) {
				t.Fatalf("want login, got %v: %s\n%s", err, out, sshd.Log())
			}
			if !h.ok && (err == nil || !strings.Contains(out, "Permission denied")) {
				t.Fatalf("want Permission denied, got %v: %s", err, out)
			}
		})
	}

	// A request narrows the certificate: TTL and principals within it.
	r2 := w.create(t, "olivia", api.CreateRequest{TTL: api.Duration(5 * time.Minute)})
	w.approve(t, r2.ID, "iris", "ian")
	_, _, _, err = w.cert(t, "olivia", api.CertRequest{RequestID: r2.ID, TTL: api.Duration(8 * time.Minute)})
	wantRefusal(t, err, api.CodeTTL, "at most 5m")
	_, _, _, err = w.cert(t, "olivia", api.CertRequest{RequestID: r2.ID, Principals: []string{"olivia"}})
	wantRefusal(t, err, api.CodePrincipal, "root")
	_, _, _, err = w.cert(t, "olivia", api.CertRequest{RequestID: r2.ID, Tier: "production"})
	wantRefusal(t, err, api.CodeBadRequest, "for tier break-glass")
	// Racing clients: exactly one certificate per request.
	var wg sync.WaitGroup
	var okN, closedN atomic.Int32
	for range 6 {
		wg.Go(func() {
			c, _, _, err := w.cert(t, "olivia", api.CertRequest{RequestID: r2.ID})
			switch {
			case err == nil:
				okN.Add(1)
				if d := time.Unix(int64(c.ValidBefore), 0).Sub(w.clock.Now()); d > 5*time.Minute+2*time.Second {
					t.Errorf("narrowed cert valid for %v, want ≤ 5m", d)
				}
			case api.IsCode(err, api.CodeRequestClosed):
				closedN.Add(1)
			default:
				t.Errorf("racing cert: %v", err)
			}
		})
	}
	wg.Wait()
	if okN.Load() != 1 || closedN.Load() != 5 {
		t.Fatalf("racing clients got %d certificates and %d refusals, want 1 and 5", okN.Load(), closedN.Load())
	}
	// A request id on a tier without approvals must still be real.
	_, _, _, err = w.cert(t, "sam", api.CertRequest{Tier: "staging", RequestID: "REQ-ZZZZZZZZ"})
	wantRefusal(t, err, api.CodeNotFound, "REQ-ZZZZZZZZ")
}

func TestRequestExpiry(t *testing.T) {
	t.Parallel()
	w := newReqWorld(t)
	ctx := context.Background()
	pending := w.create(t, "olivia", api.CreateRequest{})
	approved := w.create(t, "olivia", api.CreateRequest{})
	if d := pending.ExpiresAt.Sub(pending.CreatedAt); d != 30*time.Minute {
		t.Fatalf("pending request lives %v, want the tier's request_ttl 30m", d)
	}
	w.clock.Advance(10 * time.Minute)
	w.approve(t, approved.ID, "ian", "ivy")
	if got := w.get(t, "olivia", approved.ID); got.ExpiresAt.Sub(w.clock.Now()) < 29*time.Minute {
		t.Fatalf("an approval gives %v to use it, want request_ttl", got.ExpiresAt.Sub(w.clock.Now()))
	}
	w.clock.Advance(19 * time.Minute) // 29m: still pending
	if got := w.get(t, "ian", pending.ID); got.State != api.StatePending {
		t.Fatalf("at 29m: %s", got.State)
	}
	w.clock.Advance(2 * time.Minute) // 31m
	tests := []struct {
		name string
		call func() error
		code string
	}{
		{"get shows expired", func() error {
			if got := w.get(t, "olivia", pending.ID); got.State != api.StateExpired {
				return fmt.Errorf("state %s", got.State)
			}
			return nil
		}, ""},
		{"approve refused", func() error { _, err := w.users["ivy"].ApproveRequest(ctx, pending.ID, ""); return err }, api.CodeRequestClosed},
		{"deny refused", func() error { _, err := w.users["ivy"].DenyRequest(ctx, pending.ID, "late"); return err }, api.CodeRequestClosed},
		{"open list drops it", func() error {
			rs, err := w.users["ian"].ListRequests(ctx, api.ScopeApprovable, false)
			for _, r := range rs {
				if r.ID == pending.ID {
					return errors.New("expired request listed as open")
				}
			}
			return err
		}, ""},
		{"approved but unused still valid at 21m", func() error {
			if got := w.get(t, "olivia", approved.ID); got.State != api.StateApproved {
				return fmt.Errorf("state %s", got.State)
			}
			return nil
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.code == "" && err != nil {
				t.Fatal(err)
			}
			if tc.code != "" {
				wantRefusal(t, err, tc.code, "expired")
			}
		})
	}
	w.clock.Advance(10 * time.Minute) // the approval is 31m old
	_, _, _, err := w.cert(t, "olivia", api.CertRequest{RequestID: approved.ID})
	wantRefusal(t, err, api.CodeRequestClosed, "expired")
	// Read again and again: one expiry event per request.
	for range 3 {
		w.get(t, "olivia", pending.ID)
		w.users["olivia"].ListRequests(ctx, api.ScopeMine, true)
	}
	evs, err := w.ca.Store.Audit(ctx, store.AuditFilter{Type: ca.EventRequestExpire})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range evs {
		count[e.RequestID]++
		if e.Actor == "" || e.Reason == "" || e.Time.IsZero() {
			t.Errorf("expiry event lacks who/why/when: %+v", e)
		}
	}
	if count[pending.ID] != 1 || count[approved.ID] != 1 || len(evs) != 2 {
		t.Fatalf("expiry events %v, want one per request", count)
	}
}

func TestApprovalPolicy(t *testing.T) {
	t.Parallel()
	w := newReqWorld(t)
	ctx := context.Background()
	type decision = ca.PolicyDecision
	answer := func(d decision, err error) func(context.Context, ca.AccessRequestInfo) (decision, error) {
		return func(context.Context, ca.AccessRequestInfo) (decision, error) { return d, err }
	}
	tests := []struct {
		name   string
		policy func(context.Context, ca.AccessRequestInfo) (decision, error)
		check  func(t *testing.T)
	}{
		{"an error refuses the request with the reason", answer(decision{}, errors.New("plugin: connection refused: plugin process exited")), func(t *testing.T) {
			_, err := w.users["olivia"].CreateRequest(ctx, api.CreateRequest{Tier: api.TierBreakGlass, Reason: "INC-1"})
			wantRefusal(t, err, api.CodePolicyDenied, "the approval policy is unavailable: connection refused: plugin process exited")
		}},
		{"a denial refuses with the policy's reason", answer(decision{Deny: true, Reason: "reason must start with an incident number (INC-123)"}, nil), func(t *testing.T) {
			_, err := w.users["olivia"].CreateRequest(ctx, api.CreateRequest{Tier: api.TierBreakGlass, Reason: "because"})
			wantRefusal(t, err, api.CodePolicyDenied, "the approval policy denied the request: reason must start with an incident number (INC-123)")
		}},
		{"no answer in time refuses", func(ctx context.Context, _ ca.AccessRequestInfo) (decision, error) {
			<-ctx.Done()
			return decision{}, ctx.Err()
		}, func(t *testing.T) {
			start := time.Now()
			_, err := w.users["olivia"].CreateRequest(ctx, api.CreateRequest{Tier: api.TierBreakGlass, Reason: "INC-2"})
			wantRefusal(t, err, api.CodePolicyDenied, "no answer within 5s")
			if d := time.Since(start); d < ca.ApprovalPolicyTimeout || d > ca.ApprovalPolicyTimeout+5*time.Second {
				t.Fatalf("refused after %v, want about %v", d, ca.ApprovalPolicyTimeout)
			}
		}},
		{"extra approvals raise N", answer(decision{ExtraApprovals: 1, Reason: "weekend"}, nil), func(t *testing.T) {
			r := w.create(t, "olivia", api.CreateRequest{})
			if r.ApprovalsNeeded != 3 {
				t.Fatalf("approvals needed %d, want 2+1", r.ApprovalsNeeded)
			}
			w.approve(t, r.ID, "ian", "ivy")
			_, _, _, err := w.cert(t, "olivia", api.CertRequest{RequestID: r.ID})
			wantRefusal(t, err, api.CodeForbidden, "2 of 3")
			w.approve(t, r.ID, "iris")
			if _, _, _, err := w.cert(t, "olivia", api.CertRequest{RequestID: r.ID}); err != nil {
				t.Fatalf("three approvals: %v", err)
			}
		}},
		{"a policy may not lower N", answer(decision{ExtraApprovals: -5}, nil), func(t *testing.T) {
			if r := w.create(t, "olivia", api.CreateRequest{}); r.ApprovalsNeeded != 2 {
				t.Fatalf("approvals needed %d, want 2", r.ApprovalsNeeded)
			}
		}},
		{"a failure at approval denies the request", func(_ context.Context, info ca.AccessRequestInfo) (decision, error) {
			if info.Phase == "approve" {
				return decision{}, errors.New("schedule file unreadable")
			}
			return decision{}, nil
		}, func(t *testing.T) {
			r := w.create(t, "olivia", api.CreateRequest{})
			_, err := w.users["ian"].ApproveRequest(ctx, r.ID, "")
			wantRefusal(t, err, api.CodePolicyDenied, "unavailable: schedule file unreadable")
			got := w.get(t, "olivia", r.ID)
			if got.State != api.StateDenied || got.Denial == nil || got.Denial.By != "approval-policy" || !strings.Contains(got.Denial.Reason, "schedule file unreadable") {
				t.Fatalf("after a policy failure: %+v %+v", got, got.Denial)
			}
		}},
		{"the policy sees who asks and who approves", answer(decision{}, nil), func(t *testing.T) {
			r := w.create(t, "olivia", api.CreateRequest{Reason: "INC-9 disk full"})
			w.approve(t, r.ID, "ian")
			calls := w.policy.seen()
			if len(calls) != 2 {
				t.Fatalf("%d policy calls, want 2", len(calls))
			}
			c, a := calls[0], calls[1]
			if c.Phase != "create" || c.ID != r.ID || c.Requester != "olivia" || c.Tier != api.TierBreakGlass || c.Reason != "INC-9 disk full" ||
				!slices.Equal(c.Principals, []string{"root"}) || !slices.Contains(c.RequesterGroups, "oncall") || c.TTL != 10*time.Minute {
				t.Errorf("create call: %+v", c)
			}
			if a.Phase != "approve" || a.Approver != "ian" || len(a.Approvers) != 0 {
				t.Errorf("approve call: %+v", a)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w.policy.set(tc.policy)
			tc.check(t)
		})
	}
	// The refusals are in the audit log with the reason.
	evs, err := w.ca.Store.Audit(ctx, store.AuditFilter{Type: ca.EventRequestCreate})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		found = found || e.Outcome == store.OutcomeRefused && strings.Contains(e.Reason, "plugin process exited") && e.Actor == "olivia"
	}
	if !found {
		t.Fatal("the policy failure is not in the audit log")
	}
}

func TestRequestAuditTrail(t *testing.T) {
	t.Parallel()
	w := newReqWorld(t)
	ctx := context.Background()

	// created → approved ×2 → issued → used
	r := w.create(t, "olivia", api.CreateRequest{Reason: "INC-77 payments down"})
	w.approve(t, r.ID, "ian", "ivy")
	cert, _, _, err := w.cert(t, "olivia", api.CertRequest{RequestID: r.ID})
	if err != nil {
		t.Fatal(err)
	}
	prodHost, prodSigner := joinHost(t, w, "db1.prod", "production")
	stagingHost, stagingSigner := joinHost(t, w, "web1.staging", "staging")
	anon := w.ca.Client(t, "")
	use := api.RequestUsed{Serial: cert.Serial, SessionID: "sess-1"}
	if _, err := anon.ReportRequestUsed(ctx, r.ID, api.RequestUsed{Serial: cert.Serial + 1}, prodHost, prodSigner); !api.IsCode(err, api.CodeForbidden) {
		t.Fatalf("wrong serial: %v", err)
	}
	if _, err := anon.ReportRequestUsed(ctx, r.ID, use, stagingHost, stagingSigner); !api.IsCode(err, api.CodeForbidden) {
		t.Fatalf("a staging host reported a break-glass session: %v", err)
	}
	for range 2 { // idempotent
		got, err := anon.ReportRequestUsed(ctx, r.ID, use, prodHost, prodSigner)
		if err != nil || got.State != api.StateDone || got.UsedAt.IsZero() {
			t.Fatalf("report use: %v %+v", err, got)
		}
	}
	if err := anon.Do(ctx, http.MethodPost, api.RequestUsedPath(r.ID), use, nil); !api.IsCode(err, api.CodeUnauthenticated) {
		t.Fatalf("use reported without host auth: %v", err)
	}
	// denied
	d := w.create(t, "otto", api.CreateRequest{Reason: "INC-78 curiosity"})
	if _, err := w.users["ian"].DenyRequest(ctx, d.ID, "not an incident"); err != nil {
		t.Fatal(err)
	}
	// expired
	x := w.create(t, "olivia", api.CreateRequest{Reason: "INC-79"})
	w.clock.Advance(31 * time.Minute)
	w.users["olivia"].ListRequests(ctx, api.ScopeMine, true)

	evs, err := w.ca.Store.Audit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ typ, id string }
	got := map[key][]store.AuditEvent{}
	for _, e := range evs {
		if e.Outcome == store.OutcomeOK && strings.HasPrefix(e.Type, "request.") {
			got[key{e.Type, e.RequestID}] = append(got[key{e.Type, e.RequestID}], e)
		}
	}
	tests := []struct {
		typ, id, actor, why string
		n                   int
	}{
		{ca.EventRequestCreate, r.ID, "olivia", "INC-77 payments down", 1},
		{ca.EventRequestApprove, r.ID, "ian", "ok from ian", 2},
		{ca.EventRequestIssue, r.ID, "olivia", "INC-77 payments down", 1},
		{ca.EventRequestUse, r.ID, "db1.prod", "single-use certificate used", 1},
		{ca.EventRequestDeny, d.ID, "ian", "not an incident", 1},
		{ca.EventRequestExpire, x.ID, "sshward-ca", "pending for 30m with 0 of 2 approvals", 1},
	}
	for _, tc := range tests {
		t.Run(tc.typ, func(t *testing.T) {
			es := got[key{tc.typ, tc.id}]
			if len(es) != tc.n {
				t.Fatalf("%d %s events for %s, want %d", len(es), tc.typ, tc.id, tc.n)
			}
			e := es[0]
			if e.Actor != tc.actor || e.Reason != tc.why || e.Time.IsZero() || e.Tier != api.TierBreakGlass || e.Subject == "" {
				t.Fatalf("%s: who %q why %q when %v tier %q subject %q", tc.typ, e.Actor, e.Reason, e.Time, e.Tier, e.Subject)
			}
		})
	}
	if e := got[key{ca.EventRequestIssue, r.ID}]; len(e) == 1 && (e[0].Serial != cert.Serial || e[0].Details["approvers"] != "ian,ivy") {
		t.Errorf("issue event: %+v", e[0])
	}
	if e := got[key{ca.EventRequestApprove, r.ID}]; len(e) == 2 && e[1].Details["state"] != api.StateApproved {
		t.Errorf("second approval does not record the approved state: %+v", e[1].Details)
	}
	rep, err := w.ca.Store.VerifyAudit(ctx)
	if err != nil || rep.Records != len(evs) {
		t.Fatalf("audit chain: %v (%d records, %d listed)", err, rep.Records, len(evs))
	}
}

// joinHost joins a host with a one-time token and returns its certificate and key.
func joinHost(t testing.TB, w *reqWorld, name, tier string) (*ssh.Certificate, ssh.Signer) {
	t.Helper()
	tok, err := w.ca.Authority.NewJoinToken(context.Background(), ca.JoinTokenRequest{Names: []string{name}, Tier: tier})
	if err != nil {
		t.Fatal(err)
	}
	signer := catest.NewSigner(t)
	resp, err := w.ca.Client(t, "").Join(context.Background(), api.JoinRequest{Token: tok.Token, PublicKey: string(ssh.MarshalAuthorizedKey(signer.PublicKey()))})
	if err != nil {
		t.Fatal(err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	return pk.(*ssh.Certificate), signer
}
