package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
)

func mustDefault(t testing.TB) *Policy {
	t.Helper()
	p, err := Parse(Default())
	if err != nil {
		t.Fatalf("Parse(Default()): %v", err)
	}
	return p
}

func mustParse(t testing.TB, s string) *Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

var (
	alice    = Identity{User: "alice", Groups: []string{"engineers"}}
	aliceMFA = Identity{User: "alice", Groups: []string{"engineers"}, MFA: true}
	sreBob   = Identity{User: "bob", Groups: []string{"sre"}, MFA: true}
	oncall   = Identity{User: "carol", Groups: []string{"oncall"}, MFA: true}
)

func TestGrant(t *testing.T) {
	def := mustDefault(t)
	custom := mustParse(t, `tiers:
  ops:
    ttl: 5m
    max_ttl: 10m
    extensions: [permit-X11-forwarding, permit-user-rc]
    principals:
      ops: [ops, "{{user}}"]
      dba: [postgres, "{{user}}"]
    source_address: [10.0.0.0/8, 192.0.2.1]
    force_command: /usr/local/bin/audit-shell
    on_recording_failure: open
`)
	staging := map[string]string{
		"permit-pty": "", "permit-port-forwarding": "", "permit-agent-forwarding": "",
		api.ExtTier: "staging", api.ExtRecordInput: "no", api.ExtOnRecFail: "open",
	}
	production := map[string]string{
		"permit-pty": "", api.ExtTier: "production", api.ExtRecordInput: "yes",
		api.ExtOnRecFail: "closed", api.ExtEndOnExpiry: "",
	}
	tests := []struct {
		name   string
		policy *Policy // default when nil
		req    Request
		want   *Grant
		// for refusals:
		is   error
		as   any // pointer to a typed error
		say  string
		code string
	}{
		{
			name: "staging defaults",
			req:  Request{Identity: alice, Tier: "staging"},
			want: &Grant{Tier: "staging", Principals: []string{"alice", "deploy"}, TTL: time.Hour,
				Extensions: staging, CriticalOptions: map[string]string{}},
		},
		{
			name: "staging with a subset, duplicates folded",
			req:  Request{Identity: alice, Tier: "staging", Principals: []string{"deploy", "deploy"}, TTL: 2 * time.Hour},
			want: &Grant{Tier: "staging", Principals: []string{"deploy"}, TTL: 2 * time.Hour,
				Extensions: staging, CriticalOptions: map[string]string{}},
		},
		{
			name: "request id without approvals is still recorded",
			req:  Request{Identity: alice, Tier: "staging", RequestID: "REQ-1"},
			want: &Grant{Tier: "staging", Principals: []string{"alice", "deploy"}, TTL: time.Hour,
				Extensions: with(staging, api.ExtRequestID, "REQ-1"), CriticalOptions: map[string]string{}, RequestID: "REQ-1"},
		},
		{
			name: "oidc e-mail user keeps only literal principals",
			req:  Request{Identity: Identity{User: "alice@example.com", Groups: []string{"engineers"}}, Tier: "staging"},
			want: &Grant{Tier: "staging", Principals: []string{"deploy"}, TTL: time.Hour,
				Extensions: staging, CriticalOptions: map[string]string{}},
		},
		{
			name: "production binds the client IPv4 address",
			req:  Request{Identity: sreBob, Tier: "production", ClientAddr: "10.1.2.3"},
			want: &Grant{Tier: "production", Principals: []string{"bob"}, TTL: 15 * time.Minute, RecordInput: true,
				Extensions: production, CriticalOptions: map[string]string{"source-address": "10.1.2.3/32"}},
		},
		{
			name: "production binds the client IPv6 address",
			req:  Request{Identity: sreBob, Tier: "production", ClientAddr: "2001:db8::7", TTL: 30 * time.Minute},
			want: &Grant{Tier: "production", Principals: []string{"bob"}, TTL: 30 * time.Minute, RecordInput: true,
				Extensions: production, CriticalOptions: map[string]string{"source-address": "2001:db8::7/128"}},
		},
		{
			name: "IPv4-mapped address becomes /32",
			req:  Request{Identity: sreBob, Tier: "production", ClientAddr: "::ffff:10.1.2.3"},
			want: &Grant{Tier: "production", Principals: []string{"bob"}, TTL: 15 * time.Minute, RecordInput: true,
				Extensions: production, CriticalOptions: map[string]string{"source-address": "10.1.2.3/32"}},
		},
		{
			name: "zone is dropped",
			req:  Request{Identity: sreBob, Tier: "production", ClientAddr: "fe80::1%eth0"},
			want: &Grant{Tier: "production", Principals: []string{"bob"}, TTL: 15 * time.Minute, RecordInput: true,
				Extensions: production, CriticalOptions: map[string]string{"source-address": "fe80::1/128"}},
		},
		{
			name: "break-glass with an approved request",
			req:  Request{Identity: oncall, Tier: "break-glass", RequestID: "REQ-4711", Approved: true},
			want: &Grant{Tier: "break-glass", Principals: []string{"root"}, TTL: 10 * time.Minute,
				SingleUse: true, RecordInput: true, RequestID: "REQ-4711",
				Extensions: map[string]string{
					"permit-pty": "", api.ExtTier: "break-glass", api.ExtRecordInput: "yes", api.ExtOnRecFail: "closed",
					api.ExtRequestID: "REQ-4711", api.ExtSingleUse: "", api.ExtEndOnExpiry: "",
				},
				CriticalOptions: map[string]string{}},
		},
		{
			name:   "union over groups, force-command and CIDR list",
			policy: custom,
			req:    Request{Identity: Identity{User: "dave", Groups: []string{"dba", "ops", "nobody"}}, Tier: "ops"},
			want: &Grant{Tier: "ops", Principals: []string{"dave", "ops", "postgres"}, TTL: 5 * time.Minute,
				Extensions: map[string]string{
					"permit-X11-forwarding": "", "permit-user-rc": "",
					api.ExtTier: "ops", api.ExtRecordInput: "no", api.ExtOnRecFail: "open",
				},
				CriticalOptions: map[string]string{
					"force-command":  "/usr/local/bin/audit-shell",
					"source-address": "10.0.0.0/8,192.0.2.1",
				}},
		},
		{
			name: "unknown tier", req: Request{Identity: alice, Tier: "prod"},
			is: ErrUnknownTier, code: api.CodeUnknownTier,
			say: `unknown tier "prod": ask for one of staging, production, break-glass`,
		},
		{
			name: "no tier", req: Request{Identity: alice},
			is: ErrUnknownTier, code: api.CodeUnknownTier, say: `unknown tier ""`,
		},
		{
			name: "not entitled", req: Request{Identity: aliceMFA, Tier: "production"},
			is: ErrNotEntitled, code: api.CodeForbidden,
			say: "user alice is in no group that grants tier production (needs one of: sre)",
		},
		{
			name: "entitlement is checked before MFA", req: Request{Identity: alice, Tier: "production"},
			is: ErrNotEntitled, code: api.CodeForbidden, say: "needs one of: sre",
		},
		{
			name: "approvers are not entitled", req: Request{Identity: Identity{User: "ic", Groups: []string{"incident-commanders"}, MFA: true}, Tier: "break-glass", RequestID: "R", Approved: true},
			is: ErrNotEntitled, code: api.CodeForbidden, say: "needs one of: oncall",
		},
		{
			name: "auditors get no staging", req: Request{Identity: Identity{User: "eve", Groups: []string{"auditors"}}, Tier: "staging"},
			is: ErrNotEntitled, code: api.CodeForbidden, say: "needs one of: engineers",
		},
		{
			name: "production needs MFA", req: Request{Identity: Identity{User: "bob", Groups: []string{"sre"}}, Tier: "production", ClientAddr: "10.1.2.3"},
			is: ErrMFARequired, code: api.CodeMFARequired,
			say: "tier production requires multi-factor login: log in again with your TOTP code or an MFA-backed OIDC login",
		},
		{
			name: "break-glass needs MFA even when approved", req: Request{Identity: Identity{User: "carol", Groups: []string{"oncall"}}, Tier: "break-glass", RequestID: "R", Approved: true},
			is: ErrMFARequired, code: api.CodeMFARequired, say: "multi-factor",
		},
		{
			name: "break-glass needs approval", req: Request{Identity: oncall, Tier: "break-glass"},
			is: ErrApprovalRequired, code: api.CodeForbidden,
			say: "`sshward request --tier break-glass --reason",
		},
		{
			name: "a request id alone is not an approval", req: Request{Identity: oncall, Tier: "break-glass", RequestID: "REQ-1"},
			is: ErrApprovalRequired, code: api.CodeForbidden, say: "approved by 2 of incident-commanders",
		},
		{
			name: "principal outside the grant", req: Request{Identity: alice, Tier: "staging", Principals: []string{"deploy", "root"}},
			as: new(*PrincipalError), code: api.CodePrincipal,
			say: "principal root is not allowed for alice in tier staging (allowed: alice, deploy)",
		},
		{
			name: "hostile principal is quoted", req: Request{Identity: alice, Tier: "staging", Principals: []string{"x (allowed: root)"}},
			as: new(*PrincipalError), code: api.CodePrincipal, say: `principal "x (allowed: root)" is not allowed`,
		},
		{
			name: "no valid principal", req: Request{Identity: Identity{User: "bob@example.com", Groups: []string{"sre"}, MFA: true}, Tier: "production", ClientAddr: "10.1.2.3"},
			is: ErrNoPrincipals, code: api.CodeForbidden, say: "tier production maps user bob@example.com to no valid login name",
		},
		{
			name: "ttl above max", req: Request{Identity: alice, Tier: "staging", TTL: 3 * time.Hour},
			as: new(*TTLError), code: api.CodeTTL, say: "ttl 3h is longer than tier staging allows: ask for 2h or less",
		},
		{
			name: "ttl below minimum", req: Request{Identity: alice, Tier: "staging", TTL: 30 * time.Second},
			as: new(*TTLError), code: api.CodeBadRequest, say: "ttl 30s is shorter than the 1m minimum",
		},
		{
			name: "client address missing", req: Request{Identity: sreBob, Tier: "production"},
			is: ErrClientAddr, code: api.CodeInternal, say: "binds certificates to your network address",
		},
		{
			name: "client address with a port", req: Request{Identity: sreBob, Tier: "production", ClientAddr: "10.1.2.3:22"},
			is: ErrClientAddr, code: api.CodeInternal, say: "network address",
		},
		{
			name: "no user", req: Request{Identity: Identity{Groups: []string{"engineers"}}, Tier: "staging"},
			is: ErrBadRequest, code: api.CodeBadRequest, say: "no user",
		},
		{
			name: "negative ttl", req: Request{Identity: alice, Tier: "staging", TTL: -time.Minute},
			is: ErrBadRequest, code: api.CodeBadRequest, say: "negative",
		},
		{
			name: "approved without request id", req: Request{Identity: oncall, Tier: "break-glass", Approved: true},
			is: ErrBadRequest, code: api.CodeBadRequest, say: "request id",
		},
		{
			name: "request id with a space", req: Request{Identity: alice, Tier: "staging", RequestID: "REQ 1"},
			is: ErrBadRequest, code: api.CodeBadRequest, say: "request id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			if p == nil {
				p = def
			}
			g, err := p.Grant(tt.req)
			if tt.want != nil {
				if err != nil {
					t.Fatalf("Grant: %v", err)
				}
				if !reflect.DeepEqual(g, tt.want) {
					t.Errorf("grant\n got %+v\nwant %+v", g, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Grant = %+v, want a refusal", g)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if tt.as != nil && !errors.As(err, tt.as) {
				t.Errorf("error %T %v is not %T", err, err, tt.as)
			}
			if !strings.Contains(err.Error(), tt.say) {
				t.Errorf("message %q does not say %q", err, tt.say)
			}
			if got := ErrorCode(err); got != tt.code {
				t.Errorf("ErrorCode = %q, want %q", got, tt.code)
			}
		})
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestGrantErrorFields(t *testing.T) {
	p := mustDefault(t)
	_, err := p.Grant(Request{Identity: alice, Tier: "staging", Principals: []string{"root"}})
	var pe *PrincipalError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v", err)
	}
	if pe.Principal != "root" || !reflect.DeepEqual(pe.Allowed, []string{"alice", "deploy"}) {
		t.Errorf("PrincipalError = %+v", pe)
	}
	_, err = p.Grant(Request{Identity: alice, Tier: "staging", TTL: 5 * time.Hour})
	var te *TTLError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v", err)
	}
	if te.Asked != 5*time.Hour || te.Max != 2*time.Hour || te.Min != MinTTL || !te.TooLong() {
		t.Errorf("TTLError = %+v", te)
	}
}

func TestGrantDoesNotAliasRequest(t *testing.T) {
	p := mustDefault(t)
	asked := []string{"deploy", "alice"}
	g, err := p.Grant(Request{Identity: alice, Tier: "staging", Principals: asked})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(asked, []string{"deploy", "alice"}) {
		t.Errorf("Grant reordered the caller's slice: %v", asked)
	}
	g.Principals[0] = "root"
	tier, _ := p.Tier("staging")
	if got := tier.PrincipalsFor(alice); !reflect.DeepEqual(got, []string{"alice", "deploy"}) {
		t.Errorf("mutating a grant changed the policy: %v", got)
	}
}

func TestTiersFor(t *testing.T) {
	p := mustDefault(t)
	tests := []struct {
		name string
		id   Identity
		want []string
	}{
		{"engineer", alice, []string{"staging"}},
		{"sre without mfa still sees production", Identity{User: "bob", Groups: []string{"sre"}}, []string{"production"}},
		{"oncall", oncall, []string{"break-glass"}},
		{"everything, in file order", Identity{User: "x", Groups: []string{"oncall", "sre", "engineers"}}, []string{"staging", "production", "break-glass"}},
		{"auditor", Identity{User: "eve", Groups: []string{"auditors"}}, nil},
		{"approver", Identity{User: "ic", Groups: []string{"incident-commanders"}}, nil},
		{"oidc e-mail in sre gets no production", Identity{User: "a@b.c", Groups: []string{"sre", "engineers"}}, []string{"staging"}},
		{"no groups", Identity{User: "x"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.TiersFor(tt.id); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("TiersFor = %v, want %v", got, tt.want)
			}
		})
	}
	var nilPolicy *Policy
	if got := nilPolicy.TiersFor(alice); len(got) != 0 {
		t.Errorf("nil policy TiersFor = %v", got)
	}
}

func TestIsValidPrincipal(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"alice", true},
		{"_svc", true},
		{"Alice.B-2", true},
		{"a", true},
		{strings.Repeat("a", 32), true},
		{strings.Repeat("a", 33), false},
		{"", false},
		{"1alice", false},
		{"-rf", false},
		{".hidden", false},
		{"a@b.c", false},
		{"a b", false},
		{"a/b", false},
		{"ålice", false},
		{"root\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.s, func(t *testing.T) {
			if got := IsValidPrincipal(tt.s); got != tt.want {
				t.Errorf("IsValidPrincipal(%q) = %v, want %v", tt.s, got, tt.want)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		15 * time.Minute:                 "15m",
		2 * time.Hour:                    "2h",
		90 * time.Minute:                 "1h30m",
		90 * time.Second:                 "1m30s",
		30 * time.Second:                 "30s",
		0:                                "0s",
		-5 * time.Minute:                 "-5m",
		time.Hour + 500*time.Millisecond: "1h0m0.5s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestErrorCode(t *testing.T) {
	if ErrorCode(nil) != "" {
		t.Error("ErrorCode(nil) is not empty")
	}
	if got := ErrorCode(errors.New("disk on fire")); got != api.CodeInternal {
		t.Errorf("unknown error code = %q", got)
	}
}
