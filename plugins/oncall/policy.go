package oncall

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sshward/sshward/plugins/contract"
)

// Decide applies the rule in the package doc to r; at is the moment whose
// on-call roster counts (the request's creation).
func (s *Schedule) Decide(r contract.AccessRequestInfo, at time.Time) contract.PolicyDecision {
	if !s.covers(r.Tier) {
		return contract.PolicyDecision{}
	}
	if s.TicketPattern != nil && !s.TicketPattern.MatchString(r.Reason) {
		return contract.PolicyDecision{Deny: true, Reason: fmt.Sprintf("the reason must reference a ticket matching %s", s.TicketPattern)}
	}
	for _, u := range s.OnCall(at) {
		if u == r.Requester {
			return contract.PolicyDecision{Reason: r.Requester + " is on call"}
		}
	}
	if s.ExtraApprovals == 0 {
		return contract.PolicyDecision{Reason: r.Requester + " is not on call"}
	}
	return contract.PolicyDecision{
		ExtraApprovals: s.ExtraApprovals,
		Reason: fmt.Sprintf("%s is not on call at %s: %d more approval(s) required",
			r.Requester, at.UTC().Format(time.RFC3339), s.ExtraApprovals),
	}
}

// Policy is the plugin's contract.ApprovalPolicy: a schedule file, re-read when
// it changes.
type Policy struct {
	path string
	now  func() time.Time

	mu    sync.Mutex // guards the fields below
	sched *Schedule
	mod   time.Time // of the file sched came from
	size  int64
}

// NewPolicy reads the schedule at path. now (default time.Now) dates
// requests without a CreatedAt.
func NewPolicy(path string, now func() time.Time) (*Policy, error) {
	if now == nil {
		now = time.Now
	}
	p := &Policy{path: path, now: now}
	if _, err := p.schedule(); err != nil {
		return nil, err
	}
	return p, nil
}

// Review implements contract.ApprovalPolicy.
func (p *Policy) Review(ctx context.Context, r contract.AccessRequestInfo) (contract.PolicyDecision, error) {
	s, err := p.schedule()
	if err != nil {
		return contract.PolicyDecision{}, err
	}
	at := r.CreatedAt
	if at.IsZero() {
		at = p.now()
	}
	return s.Decide(r, at), nil
}

// schedule returns the parsed file, parsing it again when its size or
// modification time changed since.
func (p *Policy) schedule() (*Schedule, error) {
	st, err := os.Stat(p.path)
	if err != nil {
		return nil, fmt.Errorf("oncall: schedule: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sched != nil && st.ModTime().Equal(p.mod) && st.Size() == p.size {
		return p.sched, nil
	}
	data, err := os.ReadFile(p.path)
	if err != nil {
		return nil, fmt.Errorf("oncall: schedule: %w", err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.path, err)
	}
	p.sched, p.mod, p.size = s, st.ModTime(), st.Size()
	return s, nil
}
