package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
)

// rulesPolicy is the README's example: production 0 approvals for the
// read-only login, 1 for a change (the tier default), 2 from another team
// for root; staging self-service in Berlin business hours, else one
// approval; break-glass keeps two.
const rulesPolicy = `tiers:
  staging:
    ttl: 30m
    approvals: 1
    approvers: [staging-leads]
    principals: {engineers: [deploy, "{{user}}"]}
    approval_rules:
      - name: business-hours
        window: {days: mon-fri, from: "09:00", to: "18:00", time_zone: Europe/Berlin}
        approvals: 0
  production:
    ttl: 15m
    approvals: 1
    approvers: [sre-leads, team-billing, team-db]
    principals: {sre: [viewer, deploy, root]}
    approval_rules:
      - name: read-only
        principals: [viewer]
        approvals: 0
      - name: destructive
        principals: [root]
        approvals: 2
        separate_teams: [team-billing, team-db, team-sre]
      - name: billing-hosts
        labels: {app: billing}
        approvals: 1
        approvers: [billing-leads]
  break-glass:
    ttl: 10m
    approvals: 2
    approvers: [incident-commanders]
    single_use: true
    principals: {oncall: [root]}
    approval_rules:
      - name: db-hosts
        hosts: ["*.db.example.com"]
        approvals: 3
`

func TestApprovalRuleFor(t *testing.T) {
	p := mustParse(t, rulesPolicy)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// A week with an injected clock: any Monday works; this one is fixed so
	// the rows read as calendar times (no time.Now anywhere).
	mon := func(h, m int) time.Time { return time.Date(2026, 3, 2, h, m, 0, 0, berlin) } // a Monday
	if mon(0, 0).Weekday() != time.Monday {
		t.Fatal("fixture is not a Monday")
	}
	billing := api.Scope{Labels: map[string]string{"app": "billing"}}
	tests := []struct {
		name, tier string
		in         RuleInput
		wantRule   string
		wantN      int
	}{
		{"read-only login is self-service", "production", RuleInput{Principals: []string{"viewer"}}, "read-only", 0},
		{"read-only plus a change login is not read-only", "production", RuleInput{Principals: []string{"viewer", "deploy"}}, TierDefaultRule, 1},
		{"a change needs one", "production", RuleInput{Principals: []string{"deploy"}}, TierDefaultRule, 1},
		{"destructive needs two", "production", RuleInput{Principals: []string{"root"}}, "destructive", 2},
		{"no principals never matches a principals rule", "production", RuleInput{}, TierDefaultRule, 1},
		{"billing scope has its own approvers", "production", RuleInput{Principals: []string{"deploy"}, Scope: billing}, "billing-hosts", 1},
		{"other label does not match", "production", RuleInput{Principals: []string{"deploy"}, Scope: api.Scope{Labels: map[string]string{"app": "db"}}}, TierDefaultRule, 1},
		{"inside the window: self-service", "staging", RuleInput{At: mon(9, 0)}, "business-hours", 0},
		{"last minute inside", "staging", RuleInput{At: mon(17, 59)}, "business-hours", 0},
		{"18:00 is outside", "staging", RuleInput{At: mon(18, 0)}, TierDefaultRule, 1},
		{"before 09:00 outside", "staging", RuleInput{At: mon(8, 59)}, TierDefaultRule, 1},
		{"Saturday outside", "staging", RuleInput{At: mon(10, 0).AddDate(0, 0, 5)}, TierDefaultRule, 1},
		{"Friday inside", "staging", RuleInput{At: mon(10, 0).AddDate(0, 0, 4)}, "business-hours", 0},
		{"the zone counts, not UTC: 08:30 UTC is 09:30 Berlin", "staging", RuleInput{At: time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC)}, "business-hours", 0},
		{"17:30 UTC is 18:30 Berlin: outside", "staging", RuleInput{At: time.Date(2026, 3, 2, 17, 30, 0, 0, time.UTC)}, TierDefaultRule, 1},
		{"no time: no window", "staging", RuleInput{}, TierDefaultRule, 1},
		{"break-glass db hosts need three", "break-glass", RuleInput{Scope: api.Scope{Hosts: []string{"a.db.example.com"}}}, "db-hosts", 3},
		{"one host outside the pattern: default", "break-glass", RuleInput{Scope: api.Scope{Hosts: []string{"a.db.example.com", "web1"}}}, TierDefaultRule, 2},
		{"unscoped break-glass keeps two", "break-glass", RuleInput{}, TierDefaultRule, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tier, _ := p.Tier(tt.tier)
			r := tier.ApprovalRuleFor(tt.in)
			if r.Name != tt.wantRule || r.Approvals != tt.wantN {
				t.Errorf("rule %q approvals %d, want %q %d", r.Name, r.Approvals, tt.wantRule, tt.wantN)
			}
			if r.Approvals > 0 && len(r.Approvers) == 0 {
				t.Errorf("rule %q needs approvals but has no approvers", r.Name)
			}
		})
	}
}

// TestGrantApprovalRules: rules decide at issuance; the scope lands in the
// critical option; a rule that depends on scope is not had by dropping it.
func TestGrantApprovalRules(t *testing.T) {
	p := mustParse(t, rulesPolicy)
	utc := func(h int) time.Time { return time.Date(2026, 3, 4, h, 0, 0, 0, time.UTC) } // a Wednesday
	eng := Identity{User: "erin", Groups: []string{"engineers"}}
	sre := Identity{User: "sam", Groups: []string{"sre"}}
	tests := []struct {
		name    string
		r       Request
		wantErr error
		wantMsg string
	}{
		{name: "staging in business hours: no request", r: Request{Identity: eng, Tier: "staging", Now: utc(10)}},
		{name: "staging at night: approval", r: Request{Identity: eng, Tier: "staging", Now: utc(22)}, wantErr: ErrApprovalRequired, wantMsg: "approved by 1 of staging-leads (the tier default)"},
		{name: "read-only login: no request", r: Request{Identity: sre, Tier: "production", Principals: []string{"viewer"}}},
		{name: "all logins (root among them): approval", r: Request{Identity: sre, Tier: "production"}, wantErr: ErrApprovalRequired},
		{name: "root: two", r: Request{Identity: sre, Tier: "production", Principals: []string{"root"}}, wantErr: ErrApprovalRequired, wantMsg: `approved by 2 of sre-leads, team-billing, team-db (approval rule "destructive")`},
		{name: "root approved", r: Request{Identity: sre, Tier: "production", Principals: []string{"root"}, RequestID: "REQ-1", Approved: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := p.Grant(tt.r)
			if !errors.Is(err, tt.wantErr) || (err != nil && !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Fatalf("Grant = %v, want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
			if err == nil && len(g.Principals) == 0 {
				t.Fatal("granted no principals")
			}
		})
	}

	scope := api.Scope{Hosts: []string{"db1.example.com"}, Labels: map[string]string{"app": "billing"}}
	g, err := p.Grant(Request{Identity: sre, Tier: "production", Principals: []string{"viewer"}, Scope: scope})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := g.CriticalOptions[api.CritScope], "host=db1.example.com,label=app:billing"; got != want {
		t.Errorf("critical option %s = %q, want %q", api.CritScope, got, want)
	}
	g, err = p.Grant(Request{Identity: sre, Tier: "production", Principals: []string{"viewer"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.CriticalOptions[api.CritScope]; ok {
		t.Error("unscoped grant carries a scope option")
	}
	// A scope that is not normalized is a caller bug, not a wider scope.
	if _, err := p.Grant(Request{Identity: sre, Tier: "production", Principals: []string{"viewer"}, Scope: api.Scope{Hosts: []string{"DB1"}}}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("unnormalized scope: %v, want ErrBadRequest", err)
	}
}

func TestMayApprove(t *testing.T) {
	p := mustParse(t, rulesPolicy)
	prod, _ := p.Tier("production")
	destructive := prod.ApprovalRuleFor(RuleInput{Principals: []string{"root"}})
	change := prod.ApprovalRuleFor(RuleInput{Principals: []string{"deploy"}})
	requester := []string{"sre", "team-billing"}
	tests := []struct {
		name     string
		rule     ApprovalRule
		approver []string
		ok       bool
		why      string
	}{
		{"same team refused", destructive, []string{"sre-leads", "team-billing"}, false, "you are both in team-billing (separation of duties)"},
		{"approver in no team refused", destructive, []string{"sre-leads"}, false, "from one of the teams team-billing, team-db, team-sre"},
		{"in a second team shared with requester still refused", destructive, []string{"team-db", "team-billing"}, false, "both in team-billing"},
		{"other team accepted", destructive, []string{"team-db"}, true, ""},
		{"not an approver group", destructive, []string{"team-sre"}, false, "needs membership in sre-leads, team-billing, team-db"},
		{"change: same team is fine", change, []string{"sre-leads", "team-billing"}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := tt.rule.MayApprove(tt.approver, requester)
			if ok != tt.ok || !strings.Contains(why, tt.why) {
				t.Errorf("MayApprove = %v %q, want %v containing %q", ok, why, tt.ok, tt.why)
			}
		})
	}
}

func TestApprovalRulesParseRefusals(t *testing.T) {
	base := "tiers:\n  t:\n    ttl: 10m\n    approvals: %s\n    approvers: [leads]\n    principals: {g: [u]}\n%s    approval_rules:\n      - %s\n"
	tests := []struct {
		name, approvals, extra, rule, want string
	}{
		{"unknown key", "1", "", "{name: a, approvals: 0, aprovers: [x]}", `unknown approval rule key "aprovers"`},
		{"approvals required", "1", "", "{name: a}", `approval rule "a" needs approvals:`},
		{"name required", "1", "", "{approvals: 0}", `approval rule name ""`},
		{"bad zone", "1", "", `{name: a, approvals: 0, window: {days: mon-fri, from: "09:00", to: "18:00", time_zone: Mars/Base}}`, `time_zone "Mars/Base" is not a known`},
		{"no zone", "1", "", `{name: a, approvals: 0, window: {days: mon-fri, from: "09:00", to: "18:00"}}`, "time_zone is required"},
		{"from after to", "1", "", `{name: a, approvals: 0, window: {days: mon, from: "18:00", to: "09:00", time_zone: UTC}}`, "must be before to"},
		{"bad day", "1", "", `{name: a, approvals: 0, window: {days: funday, from: "09:00", to: "18:00", time_zone: UTC}}`, `day "fun"`},
		{"bad clock", "1", "", `{name: a, approvals: 0, window: {days: mon, from: "9", to: "18:00", time_zone: UTC}}`, "not a time of day"},
		{"break-glass stays two", "2", "    single_use: true\n", "{name: a, approvals: 1}", "break-glass keeps its two-person rule"},
		{"separate teams with no approvals", "1", "", "{name: a, approvals: 0, separate_teams: [x]}", "sets separate_teams but needs no approvals"},
		{"empty principals matches nothing", "1", "", "{name: a, approvals: 0, principals: []}", "matches nothing"},
		{"bad label", "1", "", "{name: a, approvals: 0, labels: {'a b': x}}", "label key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(strings.Replace(strings.Replace(base, "%s", tt.approvals, 1), "%s", tt.extra, 1), "%s", tt.rule, 1)
			_, err := Parse([]byte(src))
			var pe *ParseError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want a ParseError containing %q", err, tt.want)
			}
		})
	}
}

// TestApprovalRulesRoundTrip: Marshal writes what Parse reads.
func TestApprovalRulesRoundTrip(t *testing.T) {
	p := mustParse(t, rulesPolicy)
	out, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, out)
	}
	for _, name := range p.TierNames() {
		a, _ := p.Tier(name)
		b, _ := q.Tier(name)
		if len(a.ApprovalRules) != len(b.ApprovalRules) {
			t.Fatalf("tier %s: %d rules, re-parsed %d", name, len(a.ApprovalRules), len(b.ApprovalRules))
		}
		for i := range a.ApprovalRules {
			x, y := a.ApprovalRules[i], b.ApprovalRules[i]
			if x.Name != y.Name || x.Approvals != y.Approvals || (x.Window == nil) != (y.Window == nil) ||
				(x.Window != nil && x.Window.String() != y.Window.String()) {
				t.Errorf("tier %s rule %d: %+v, re-parsed %+v", name, i, x, y)
			}
		}
	}
}
