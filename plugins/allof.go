package plugins

import (
	"context"
	"strings"

	"github.com/sshward/sshward/plugins/contract"
)

// AllOf combines approval policies so that all must allow: the first error
// or denial wins (in order; later members are not asked), ExtraApprovals
// is the largest asked for (each member's demand is then met), and the
// reasons of the members that allowed are joined with "; ".
type AllOf []contract.ApprovalPolicy

// Review implements contract.ApprovalPolicy.
func (a AllOf) Review(ctx context.Context, r contract.AccessRequestInfo) (contract.PolicyDecision, error) {
	var out contract.PolicyDecision
	var reasons []string
	for _, p := range a {
		d, err := p.Review(ctx, r)
		if err != nil {
			return contract.PolicyDecision{}, err
		}
		if d.Deny {
			return d, nil
		}
		out.ExtraApprovals = max(out.ExtraApprovals, d.ExtraApprovals)
		if d.Reason != "" {
			reasons = append(reasons, d.Reason)
		}
	}
	out.Reason = strings.Join(reasons, "; ")
	return out, nil
}
