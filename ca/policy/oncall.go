package policy

import (
	"fmt"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sshward/sshward/ca/api"
)

// On-call entitlements (issue 12 §2). Two tier keys:
//
//	requires_oncall: true   # certificates only for a user on call now
//	oncall_approvals: 0     # approvals a request needs while the requester is
//	                        # on call (default: approvals); off call, approvals
//
// A certificate granted through on-call (the tier requires it, or the
// on-call waiver replaced approvals) expires at the end of the holder's
// shift at the latest, carries api.ExtOnCallUntil, and is revoked by the CA
// when the shift ends. Whether someone is on call is the CA's to say, from
// its schedule (ca/oncall): it passes Request.OnCall.

// ErrNotOnCall refuses a requires_oncall tier to a user who is not on call
// now (or whose shift ends within MinTTL). It wraps ErrNotEntitled, so
// callers that map refusals by entitlement need no new case.
var ErrNotOnCall = fmt.Errorf("policy: not on call: %w", ErrNotEntitled)

// OnCall says that the identity is on call now; the CA fills it from its
// schedule. Left is the time from now to End, so that Grant stays free of
// clocks.
type OnCall struct {
	Rotation   string
	Start, End time.Time
	Left       time.Duration
}

// onCallKeys are the tier keys this file parses.
var onCallKeys = []string{"requires_oncall", "oncall_approvals"}

func init() { tierKeys = append(tierKeys, onCallKeys...) }

// onCallKey parses one of onCallKeys into t.
func (d *decoder) onCallKey(tier string, kv pair, t *Tier) error {
	switch kv.key {
	case "requires_oncall":
		return d.boolean(tier, kv, &t.RequiresOnCall)
	case "oncall_approvals":
		var n int
		if err := d.integer(tier, kv, &n); err != nil {
			return err
		}
		t.OnCallApprovals = &n
	}
	return nil
}

// checkOnCall validates the on-call keys.
func (t *Tier) checkOnCall() *issue {
	n := t.Name
	if t.OnCallApprovals != nil {
		switch {
		case *t.OnCallApprovals < 0:
			return fieldIssue(n, "oncall_approvals", "oncall_approvals is %d: it must be 0 or more", *t.OnCallApprovals)
		case *t.OnCallApprovals > t.Approvals:
			return fieldIssue(n, "oncall_approvals", "oncall_approvals %d is more than approvals %d: being on call should never need more approvals", *t.OnCallApprovals, t.Approvals)
		}
	}
	if (t.RequiresOnCall || t.OnCallApprovals != nil) && !t.EndSessionOnExpiry {
		return fieldIssue(n, "end_session_on_expiry", "tier %s grants access through on-call, so its sessions must end with the shift: set end_session_on_expiry: true", n)
	}
	return nil
}

// onCallNodes writes the on-call keys (Marshal).
func (t *Tier) onCallNodes(n *yaml.Node) {
	if t.RequiresOnCall {
		put(n, "requires_oncall", boolNode(true))
	}
	if t.OnCallApprovals != nil {
		put(n, "oncall_approvals", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(*t.OnCallApprovals)})
	}
}

// UsesOnCall reports whether Grant looks at Request.OnCall for this tier
// (the CA consults its schedule only then).
func (t *Tier) UsesOnCall() bool { return t.RequiresOnCall || t.OnCallApprovals != nil }

// approvalsFor is the approvals r needs: oncall_approvals for a requester
// on call, else approvals.
func (t *Tier) approvalsFor(r Request) int {
	if r.OnCall != nil && t.OnCallApprovals != nil {
		return *t.OnCallApprovals
	}
	return t.Approvals
}

// ApprovalsFor is the approvals an access request for the tier needs when
// its requester is (onCall) or is not on call.
func (t *Tier) ApprovalsFor(onCall bool) int {
	if onCall && t.OnCallApprovals != nil {
		return *t.OnCallApprovals
	}
	return t.Approvals
}

// throughOnCall reports whether the grant for r rests on r's on-call
// status: the tier requires it, or the waiver stood in for approvals.
func (t *Tier) throughOnCall(r Request) bool {
	if r.OnCall == nil {
		return false
	}
	return t.RequiresOnCall || (!r.Approved && t.approvalsFor(r) < t.Approvals)
}

// requireOnCall refuses a requires_oncall tier to whoever is not on call.
func (t *Tier) requireOnCall(r Request) error {
	if !t.RequiresOnCall {
		return nil
	}
	if r.OnCall == nil {
		return refuse(ErrNotOnCall, "tier %s is only for whoever is on call, and %s is not on call now: ask the person on call, or wait for your shift",
			t.Name, display(r.Identity.User))
	}
	return nil
}

// capToShift caps ttl at the end of the shift when the grant rests on it.
func (t *Tier) capToShift(ttl time.Duration, r Request) (time.Duration, error) {
	if !t.throughOnCall(r) {
		return ttl, nil
	}
	if r.OnCall.Left < MinTTL {
		return 0, refuse(ErrNotOnCall, "your on-call shift ends at %s, in less than %s: tier %s needs a shift that is still running: ask whoever is on call next",
			r.OnCall.End.UTC().Format("2006-01-02 15:04:05 UTC"), FormatDuration(MinTTL), t.Name)
	}
	return min(ttl, r.OnCall.Left), nil
}

// onCallGrant marks g as granted through on-call.
func (t *Tier) onCallGrant(g *Grant, r Request) {
	if !t.throughOnCall(r) {
		return
	}
	oc := *r.OnCall
	g.OnCall = &oc
	g.Extensions[api.ExtOnCallUntil] = oc.End.UTC().Format(time.RFC3339)
}
