package ca

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
)

// Need-to-know scope and risk-tiered approvals (issue 12 §3). A request
// or certificate may be scoped to hosts and host labels (api.Scope); the
// scope goes into the certificate as the critical option api.CritScope,
// which sshward agents enforce and stock sshd refuses. The tier's approval
// rules (policy/approvalrules.go) decide, from the principals, the scope
// and the time of the request, how many approvals it needs, from which
// groups, and whether approvers must be from another team than the
// requester. The rule of a request is evaluated at its creation time, so
// a request made outside a window keeps needing its approvals.

// requestScope is the scope r was made for.
func requestScope(r *store.AccessRequest) api.Scope {
	return api.Scope{Hosts: r.Hosts, Labels: r.Labels}
}

// requestRule is the approval rule of r under the tier's current rules,
// evaluated at r's creation.
func requestRule(r *store.AccessRequest, t *policy.Tier) policy.ApprovalRule {
	return t.RuleFor(policy.Request{
		Identity:   policy.Identity{User: r.Requester, Groups: r.RequesterGroups},
		Tier:       r.Tier,
		Principals: r.Principals,
		Scope:      requestScope(r),
		Now:        r.CreatedAt,
	})
}

// isRequestApprover: sess is in one of the approver groups of r's rule.
func isRequestApprover(sess *store.Session, r *store.AccessRequest, t *policy.Tier) bool {
	rule := requestRule(r, t)
	return slices.ContainsFunc(sess.Groups, func(g string) bool { return slices.Contains(rule.Approvers, g) })
}

// checkSeparation refuses an approver who shares a team with the requester
// when r's rule asks for separation of duties.
func checkSeparation(sess *store.Session, r *store.AccessRequest, t *policy.Tier) error {
	rule := requestRule(r, t)
	if ok, why := rule.MayApprove(sess.Groups, r.RequesterGroups); !ok {
		return refuse(api.CodeForbidden, http.StatusForbidden, nil, "you cannot approve %s: %s: ask someone else in %s", r.ID, why, strings.Join(rule.Approvers, ", "))
	}
	return nil
}

// noApprovalNeeded refuses a request that its rule lets through without
// approval: the user should just take the certificate.
func noApprovalNeeded(t *policy.Tier, rule policy.ApprovalRule, scope api.Scope) error {
	which := "tier " + t.Name + " needs no approval"
	if rule.Name != policy.TierDefaultRule {
		which = "approval rule " + strconv.Quote(rule.Name) + " of tier " + t.Name + " needs no approval for this request"
	}
	return refuse(api.CodeBadRequest, http.StatusBadRequest, nil, "%s: run sshward cert --tier %s%s", which, t.Name, scopeFlags(scope))
}

// scopeFlags writes scope as the sshward flags that ask for it.
func scopeFlags(s api.Scope) string {
	var b strings.Builder
	for _, h := range s.Hosts {
		b.WriteString(" --host " + h)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		b.WriteString(" --label " + k + "=" + s.Labels[k])
	}
	return b.String()
}

// scopeDetails adds the scope and the approval rule to audit details.
func scopeDetails(d map[string]string, s api.Scope, rule policy.ApprovalRule) {
	if len(s.Hosts) > 0 {
		d["hosts"] = joinComma(s.Hosts)
	}
	if !s.IsZero() {
		d["scope"] = s.String()
	}
	d["approval_rule"] = rule.Name
	if len(rule.SeparateTeams) > 0 {
		d["separate_teams"] = joinComma(rule.SeparateTeams)
	}
}

// certScope is the scope of a certificate request: the access request's
// when there is one (the client may repeat it, not change it), else what
// the client asked for.
func certScope(req *api.CertRequest, ar *store.AccessRequest) (api.Scope, error) {
	asked, err := api.Scope{Hosts: req.Hosts, Labels: req.Labels}.Normalize()
	if err != nil {
		return api.Scope{}, badRequest(err, "certificate request: %v", err)
	}
	if ar == nil {
		return asked, nil
	}
	want, err := requestScope(ar).Normalize()
	if err != nil {
		return api.Scope{}, err
	}
	if !asked.IsZero() && !asked.Equal(want) {
		return api.Scope{}, refuse(api.CodeBadRequest, http.StatusBadRequest, nil, "access request %s was approved for %s, not %s: leave out --host/--label or repeat the request's", ar.ID, want, asked)
	}
	return want, nil
}
