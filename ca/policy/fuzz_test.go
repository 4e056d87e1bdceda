package policy

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
)

// FuzzParse checks that Parse never panics, that its errors are always
// *ParseError with a plausible line, and that whatever it accepts passes
// Check, survives Marshal → Parse unchanged, and can be granted from without
// panicking or breaking a grant's invariants.
func FuzzParse(f *testing.F) {
	f.Add(Default())
	f.Add([]byte(minimal))
	f.Add([]byte(aliasBomb()))
	f.Add([]byte("tiers:\n  a: &a {ttl: 5m, principals: {g: [\"{{user}}\"]}, source_address: client}\n  b: {<<: *a, approvals: 1, approvers: [g]}\n"))
	f.Add([]byte("tiers: {x: {ttl: 1m, principals: {\"<<\": [\"_{{user}}\"]}, hosts: [\"*\"], force_command: \"true\"}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a *ParseError", err, err)
			}
			// YAML breaks lines at \n and \r; a syntax error may point one
			// line past the end.
			lines := strings.Count(string(data), "\n") + strings.Count(string(data), "\r") + 1
			if pe.Line < 0 || pe.Line > lines+1 {
				t.Fatalf("line %d outside a %d-line file: %v", pe.Line, lines, err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error %q is not one line", err.Error())
			}
			return
		}
		if err := p.Check(); err != nil {
			t.Fatalf("Parse accepted a policy Check refuses: %v", err)
		}
		out, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		q, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the policy:\n%s", out)
		}
		var groups []string
		for _, tier := range p.Tiers {
			groups = append(groups, tier.Groups()...)
		}
		for _, tier := range p.Tiers {
			for _, id := range []Identity{
				{User: "alice", Groups: groups, MFA: true},
				{User: "a@b.c", Groups: groups},
				{User: "x", Groups: []string{"nobody"}},
			} {
				for _, r := range []Request{
					{Identity: id, Tier: tier.Name, ClientAddr: "192.0.2.1", RequestID: "R-1", Approved: true},
					{Identity: id, Tier: tier.Name, TTL: tier.MaxTTL, Principals: []string{"root", "alice"}},
				} {
					g, err := p.Grant(r)
					checkGrant(t, p, r, g, err)
				}
			}
		}
	})
}

// FuzzGrant throws arbitrary requests at the default policy.
func FuzzGrant(f *testing.F) {
	f.Add("alice", "engineers", false, "staging", "", int64(0), "", "", false)
	f.Add("bob", "sre", true, "production", "bob", int64(30*time.Minute), "::ffff:10.0.0.1", "", false)
	f.Add("carol", "oncall,sre", true, "break-glass", "root,root", int64(time.Minute), "10.0.0.1", "REQ-1", true)
	f.Add("a@b.c", "engineers", false, "staging", "deploy", int64(-1), "bogus", "REQ 1", false)
	p := mustDefault(f)
	f.Fuzz(func(t *testing.T, user, groups string, mfa bool, tier, principals string, ttl int64, addr, reqID string, approved bool) {
		r := Request{
			Identity:   Identity{User: user, Groups: strings.Split(groups, ","), MFA: mfa},
			Tier:       tier,
			TTL:        time.Duration(ttl),
			ClientAddr: addr,
			RequestID:  reqID,
			Approved:   approved,
		}
		if principals != "" {
			r.Principals = strings.Split(principals, ",")
		}
		g, err := p.Grant(r)
		checkGrant(t, p, r, g, err)
	})
}

// checkGrant asserts what every grant and every refusal must satisfy.
func checkGrant(t *testing.T, p *Policy, r Request, g *Grant, err error) {
	t.Helper()
	if err != nil {
		if g != nil {
			t.Fatalf("Grant returned both a grant and %v", err)
		}
		if err.Error() == "" || strings.Contains(err.Error(), "\n") {
			t.Fatalf("refusal message %q is not one line", err.Error())
		}
		if code := ErrorCode(err); code == api.CodeInternal && !errors.Is(err, ErrClientAddr) {
			t.Fatalf("refusal %v maps to no api code", err)
		}
		return
	}
	tier, ok := p.Tier(r.Tier)
	if !ok || g.Tier != tier.Name {
		t.Fatalf("grant for tier %q from request for %q", g.Tier, r.Tier)
	}
	if !tier.Entitles(r.Identity) || tier.MFA && !r.Identity.MFA || tier.Approvals > 0 && !r.Approved {
		t.Fatalf("grant %+v for a request that should be refused: %+v", g, r)
	}
	if len(g.Principals) == 0 || !slices.IsSorted(g.Principals) || len(slices.Compact(slices.Clone(g.Principals))) != len(g.Principals) {
		t.Fatalf("principals %q are empty, unsorted or repeated", g.Principals)
	}
	allowed := tier.PrincipalsFor(r.Identity)
	for _, pr := range g.Principals {
		if !IsValidPrincipal(pr) || !slices.Contains(allowed, pr) {
			t.Fatalf("principal %q is invalid or not allowed (%v)", pr, allowed)
		}
	}
	if g.TTL < MinTTL || g.TTL > tier.MaxTTL {
		t.Fatalf("ttl %v outside [%v, %v]", g.TTL, MinTTL, tier.MaxTTL)
	}
	if g.Extensions[api.ExtTier] != tier.Name || g.Extensions[api.ExtOnRecFail] != tier.OnRecordingFailure {
		t.Fatalf("extensions %v do not carry the tier", g.Extensions)
	}
	if _, ok := g.Extensions[api.ExtSingleUse]; ok != tier.SingleUse || g.SingleUse != tier.SingleUse {
		t.Fatalf("single-use extension %v, tier says %v", ok, tier.SingleUse)
	}
	if tier.SourceAddress != "" && g.CriticalOptions["source-address"] == "" {
		t.Fatalf("tier %s binds the source address but the grant does not", tier.Name)
	}
}
