package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
)

const onCallPolicy = `tiers:
  oncall-prod:
    ttl: 4h
    max_ttl: 12h
    requires_oncall: true
    trusted_on: [prod-ro]
    principals: {sre: [root]}
    end_session_on_expiry: true
  oncall-bg:
    ttl: 10m
    approvals: 1
    approvers: [ic]
    requires_oncall: true
    principals: {sre: [root]}
    end_session_on_expiry: true
  prod-ro:
    ttl: 1h
    approvals: 1
    approvers: [sre-leads]
    oncall_approvals: 0
    principals: {sre: [readonly]}
    end_session_on_expiry: true
`

func TestGrantOnCall(t *testing.T) {
	p := mustParse(t, onCallPolicy)
	end := time.Date(2030, 1, 1, 18, 0, 0, 0, time.UTC) // only formatted, never compared with a clock
	shift := func(left time.Duration) *OnCall {
		return &OnCall{Rotation: "sre-primary", Start: end.Add(-8 * time.Hour), End: end, Left: left}
	}
	bob := Identity{User: "bob", Groups: []string{"sre"}}
	tests := []struct {
		name     string
		req      Request
		wantErr  error
		wantMsg  string
		wantTTL  time.Duration
		capped   bool // the grant rests on being on call
		approved bool
	}{
		{name: "off call: refused with the reason", req: Request{Identity: bob, Tier: "oncall-prod"},
			wantErr: ErrNotOnCall, wantMsg: "tier oncall-prod is only for whoever is on call, and bob is not on call now"},
		{name: "off call is also not entitled (existing mappings hold)", req: Request{Identity: bob, Tier: "oncall-prod"}, wantErr: ErrNotEntitled},
		{name: "on call: the default ttl fits the shift", req: Request{Identity: bob, Tier: "oncall-prod", OnCall: shift(8 * time.Hour)},
			wantTTL: 4 * time.Hour, capped: true},
		{name: "on call: capped at the shift end", req: Request{Identity: bob, Tier: "oncall-prod", OnCall: shift(90 * time.Minute)},
			wantTTL: 90 * time.Minute, capped: true},
		{name: "a longer ttl asked is capped too", req: Request{Identity: bob, Tier: "oncall-prod", TTL: 12 * time.Hour, OnCall: shift(2 * time.Hour)},
			wantTTL: 2 * time.Hour, capped: true},
		{name: "more than max_ttl is still refused", req: Request{Identity: bob, Tier: "oncall-prod", TTL: 13 * time.Hour, OnCall: shift(20 * time.Hour)},
			wantMsg: "longer than tier oncall-prod allows"},
		{name: "a shift ending within a minute grants nothing", req: Request{Identity: bob, Tier: "oncall-prod", OnCall: shift(30 * time.Second)},
			wantErr: ErrNotOnCall, wantMsg: "your on-call shift ends at 2030-01-01 18:00:00 UTC"},
		{name: "on call without groups: not entitled", req: Request{Identity: Identity{User: "mallory"}, Tier: "oncall-prod", OnCall: shift(time.Hour)},
			wantErr: ErrNotEntitled, wantMsg: "in no group"},
		{name: "approvals do not stand in for being on call", req: Request{Identity: bob, Tier: "oncall-bg", RequestID: "REQ-1", Approved: true},
			wantErr: ErrNotOnCall},
		{name: "on call still needs the approvals", req: Request{Identity: bob, Tier: "oncall-bg", OnCall: shift(time.Hour)},
			wantErr: ErrApprovalRequired},
		{name: "on call and approved: capped at the shift", req: Request{Identity: bob, Tier: "oncall-bg", RequestID: "REQ-1", Approved: true, OnCall: shift(5 * time.Minute)},
			wantTTL: 5 * time.Minute, capped: true, approved: true},
		{name: "read-only off call needs an approval", req: Request{Identity: bob, Tier: "prod-ro"},
			wantErr: ErrApprovalRequired},
		{name: "read-only on call: approval waived, capped", req: Request{Identity: bob, Tier: "prod-ro", OnCall: shift(30 * time.Minute)},
			wantTTL: 30 * time.Minute, capped: true},
		{name: "read-only approved by a person: not tied to a shift", req: Request{Identity: bob, Tier: "prod-ro", RequestID: "REQ-1", Approved: true},
			wantTTL: time.Hour, approved: true},
		{name: "read-only approved by a person while on call: not tied either", req: Request{Identity: bob, Tier: "prod-ro", RequestID: "REQ-1", Approved: true, OnCall: shift(10 * time.Minute)},
			wantTTL: time.Hour, approved: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := p.Grant(tt.req)
			if tt.wantErr != nil || tt.wantMsg != "" {
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Grant = %+v, %v; want %v mentioning %q", g, err, tt.wantErr, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.TTL != tt.wantTTL {
				t.Errorf("TTL = %s, want %s", g.TTL, tt.wantTTL)
			}
			until, has := g.Extensions[api.ExtOnCallUntil]
			if tt.capped != (g.OnCall != nil) || tt.capped != has {
				t.Fatalf("grant through on-call = %v (extension %q), want %v", g.OnCall != nil, until, tt.capped)
			}
			if has && until != "2030-01-01T18:00:00Z" {
				t.Errorf("%s = %q", api.ExtOnCallUntil, until)
			}
		})
	}
	if ErrorCode(ErrNotOnCall) != api.CodeForbidden {
		t.Errorf("ErrorCode(ErrNotOnCall) = %s", ErrorCode(ErrNotOnCall))
	}
}

func TestParseOnCall(t *testing.T) {
	p := mustParse(t, onCallPolicy)
	prod, _ := p.Tier("oncall-prod")
	ro, _ := p.Tier("prod-ro")
	if !prod.RequiresOnCall || prod.OnCallApprovals != nil || !prod.UsesOnCall() {
		t.Fatalf("oncall-prod = %+v", prod)
	}
	if ro.RequiresOnCall || ro.OnCallApprovals == nil || *ro.OnCallApprovals != 0 || ro.ApprovalsFor(true) != 0 || ro.ApprovalsFor(false) != 1 {
		t.Fatalf("prod-ro = %+v", ro)
	}
	out, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back := mustParse(t, string(out))
	b, _ := back.Tier("prod-ro")
	if bp, _ := back.Tier("oncall-prod"); !bp.RequiresOnCall || b.OnCallApprovals == nil || *b.OnCallApprovals != 0 {
		t.Fatalf("round trip lost the on-call keys:\n%s", out)
	}

	base := "tiers:\n  t:\n    ttl: 1h\n    principals: {sre: [root]}\n"
	tests := []struct{ name, yaml, want string }{
		{"sessions must end with the shift", base + "    requires_oncall: true\n", "line 2: tier \"t\": tier t grants access through on-call, so its sessions must end with the shift: set end_session_on_expiry: true"},
		{"more approvals on call", base + "    end_session_on_expiry: true\n    approvals: 1\n    approvers: [x]\n    oncall_approvals: 2\n", "oncall_approvals 2 is more than approvals 1"},
		{"negative", base + "    end_session_on_expiry: true\n    oncall_approvals: -1\n", "oncall_approvals is -1"},
		{"not a bool", base + "    requires_oncall: sometimes\n", "requires_oncall must be true or false"},
		{"typo", base + "    requires_on_call: true\n", "did you mean requires_oncall?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want %q", err, tt.want)
			}
		})
	}
}
