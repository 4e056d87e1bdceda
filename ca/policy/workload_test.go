package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
)

const workloadPolicy = `tiers:
  production:
    ttl: 15m
    max_ttl: 30m
    approvals: 1
    approvers: [leads]
    principals: {sre: ["{{user}}"]}
    extensions: [permit-pty]
  staging:
    ttl: 1h
    principals: {eng: ["{{user}}"]}
workload_issuers:
  - issuer: https://token.actions.githubusercontent.com
    audience: https://ca.example.com
    max_age: 5m
    cert_ttl: 2m
    rules:
      - tier: production
        principals: [deploy]
        claims: {repository: org/deploy, ref: refs/heads/main, environment: production}
      - tier: staging
        principals: [deploy, ci]
        claims: {repository: "org/*"}
`

func TestParseWorkloadIssuers(t *testing.T) {
	p := mustParse(t, workloadPolicy)
	want := []WorkloadIssuer{{
		Issuer: "https://token.actions.githubusercontent.com", Audience: "https://ca.example.com",
		MaxAge: 5 * time.Minute, CertTTL: 2 * time.Minute,
		Rules: []WorkloadRule{
			{Tier: "production", Principals: []string{"deploy"}, Claims: map[string]string{"repository": "org/deploy", "ref": "refs/heads/main", "environment": "production"}},
			{Tier: "staging", Principals: []string{"deploy", "ci"}, Claims: map[string]string{"repository": "org/*"}},
		},
	}}
	if !reflect.DeepEqual(p.WorkloadIssuers, want) {
		t.Fatalf("WorkloadIssuers = %+v\nwant %+v", p.WorkloadIssuers, want)
	}
	out, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	q := mustParse(t, string(out))
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("round trip changed the policy:\n%s", out)
	}
	// Defaults when max_age and cert_ttl are left out.
	d := mustParse(t, "tiers: {ci: {ttl: 5m, principals: {x: [a]}}}\nworkload_issuers: [{issuer: \"http://127.0.0.1:9\", audience: sshward, rules: [{tier: ci, principals: [deploy], claims: {repository: org/x}}]}]\n")
	if got := d.WorkloadIssuers[0]; got.MaxAge != DefaultWorkloadMaxAge || got.CertTTL != DefaultWorkloadCertTTL {
		t.Fatalf("defaults: max_age %s cert_ttl %s", got.MaxAge, got.CertTTL)
	}
}

// TestParseWorkloadRefusals: each mistake is refused at load time, on the
// line at fault, with a reason that says what to change.
func TestParseWorkloadRefusals(t *testing.T) {
	const head = "tiers:\n  production: {ttl: 15m, principals: {sre: [root]}}\n  oncall: {ttl: 15m, principals: {sre: [root]}, requires_oncall: true, end_session_on_expiry: true}\nworkload_issuers:\n"
	rule := "    rules: [{tier: production, principals: [deploy], claims: {repository: org/deploy}}]\n"
	tests := []struct {
		name, body string
		line       int
		want       string
	}{
		{"not a list", "  issuer: x\n", 5, "workload_issuers must be a list"},
		{"unknown key", "  - issuer: https://i.example\n    audiance: x\n" + rule, 6, `unknown key "audiance": did you mean audience?`},
		{"no issuer", "  - audience: x\n" + rule, 5, "must be an https URL"},
		{"plain http off loopback", "  - issuer: http://ci.example.com\n    audience: x\n" + rule, 5, "must use https (http only on loopback)"},
		{"issuer with query", "  - issuer: https://i.example/?a=b\n    audience: x\n" + rule, 5, "without query or fragment"},
		{"no audience", "  - issuer: https://i.example\n" + rule, 5, "needs an audience"},
		{"max_age too long", "  - issuer: https://i.example\n    audience: x\n    max_age: 2h\n" + rule, 7, "max_age 2h must be between 30s and 1h"},
		{"cert_ttl too long", "  - issuer: https://i.example\n    audience: x\n    cert_ttl: 12h\n" + rule, 7, "cert_ttl 12h must be between 1m and 1h"},
		{"no rules", "  - issuer: https://i.example\n    audience: x\n", 5, "has no rules"},
		{"unknown tier", "  - issuer: https://i.example\n    audience: x\n    rules: [{tier: prod, principals: [deploy], claims: {repository: a/b}}]\n", 7, `unknown tier "prod"`},
		{"on-call tier", "  - issuer: https://i.example\n    audience: x\n    rules: [{tier: oncall, principals: [deploy], claims: {repository: a/b}}]\n", 7, "which a workload never is"},
		{"no claims: would admit every token", "  - issuer: https://i.example\n    audience: x\n    rules: [{tier: production, principals: [deploy]}]\n", 7, "claims is required"},
		{"star claim", "  - issuer: https://i.example\n    audience: x\n    rules: [{tier: production, principals: [deploy], claims: {repository: \"*\"}}]\n", 7, `pattern "*" matches anything`},
		{"bad glob", "  - issuer: https://i.example\n    audience: x\n    rules: [{tier: production, principals: [deploy], claims: {ref: \"refs/[\"}}]\n", 7, "not a valid glob"},
		{"no principals", "  - issuer: https://i.example\n    audience: x\n    rules: [{tier: production, claims: {repository: a/b}}]\n", 7, "principals is required"},
		{"bad principal", "  - issuer: https://i.example\n    audience: x\n    rules: [{tier: production, principals: [\"de ploy\"], claims: {repository: a/b}}]\n", 7, `principal "de ploy" is not a valid login name`},
		{"issuer twice", "  - issuer: https://i.example\n    audience: x\n" + rule + "  - issuer: https://i.example\n    audience: y\n" + rule, 8, "listed twice"},
		{"rule key typo", "  - issuer: https://i.example\n    audience: x\n    rules: [{tier: production, principal: [deploy], claims: {repository: a/b}}]\n", 7, `unknown key "principal"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(head + tc.body))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse = %v, want a *ParseError", err)
			}
			if !strings.Contains(pe.Reason, tc.want) || pe.Line != tc.line {
				t.Fatalf("error %q (line %d), want %q on line %d", err, pe.Line, tc.want, tc.line)
			}
		})
	}
}

func TestGrantWorkload(t *testing.T) {
	p := mustParse(t, workloadPolicy)
	g, err := p.GrantWorkload(WorkloadRequest{Tier: "production", Principals: []string{"deploy"}, TTL: 2 * time.Minute, ClientAddr: "192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	if g.TTL != 2*time.Minute || !reflect.DeepEqual(g.Principals, []string{"deploy"}) || g.Extensions[api.ExtTier] != "production" {
		t.Fatalf("grant = %+v", g)
	}
	if _, ok := g.Extensions["permit-pty"]; !ok {
		t.Fatalf("tier extensions missing: %v", g.Extensions)
	}
	// cert_ttl longer than the tier allows is capped at max_ttl.
	if g, err := p.GrantWorkload(WorkloadRequest{Tier: "production", Principals: []string{"deploy"}, TTL: time.Hour}); err != nil || g.TTL != 30*time.Minute {
		t.Fatalf("capped grant = %+v, %v; want ttl 30m", g, err)
	}
	if _, err := p.GrantWorkload(WorkloadRequest{Tier: "nope", Principals: []string{"deploy"}, TTL: time.Minute}); !errors.Is(err, ErrUnknownTier) {
		t.Fatalf("unknown tier: %v", err)
	}
	if _, err := p.GrantWorkload(WorkloadRequest{Tier: "production", TTL: time.Minute}); !errors.Is(err, ErrNoPrincipals) {
		t.Fatalf("no principals: %v", err)
	}
}
