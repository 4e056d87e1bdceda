package ca

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
)

// Access reviews (issue 12 §4): per user and tier, who could get access
// (the user's groups through the policy), who did (certificates issued,
// break-glass requests, approvals given) in the period, and the
// entitlements nobody used, which are the candidates to remove. A reviewer
// signs each line off; the sign-off is an audit record in the hash chain.

// Review audit event type and decisions.
const (
	AuditReviewSignoff = "review.signoff"
	DecisionKeep       = "keep"
	DecisionRemove     = "remove"
)

// ReviewLine is one user and tier of an access review.
type ReviewLine struct {
	User  string `json:"user"`
	Tier  string `json:"tier"`
	Known bool   `json:"known"` // a local user (else an identity seen only in certificates, e.g. from OIDC)
	// Entitled: the user's groups give principals in the tier now.
	Entitled bool     `json:"entitled"`
	Groups   []string `json:"groups,omitempty"` // the user's groups that give the tier
	// Certificates issued in the period, the last one, and their serials
	// (recordings name the serial: sshward sessions --user USER).
	Certificates int       `json:"certificates"`
	LastIssued   time.Time `json:"last_issued,omitzero"`
	Serials      []uint64  `json:"serials,omitempty"`
	// Requests made in the period (break-glass and other approval tiers),
	// those used, their recordings, and approvals this user gave.
	Requests       int      `json:"requests"`
	RequestsUsed   int      `json:"requests_used"`
	Recordings     []string `json:"recordings,omitempty"`
	ApprovalsGiven int      `json:"approvals_given"`
	// Unused: entitled but no certificate or request in the period, a
	// candidate to remove.
	Unused bool `json:"unused"`
	// SignOff is the latest sign-off of this line since the period began.
	SignOff *ReviewSignOff `json:"signoff,omitempty"`
}

// ReviewSignOff is a reviewer's decision on one line.
type ReviewSignOff struct {
	User     string    `json:"user"`
	Tier     string    `json:"tier"`
	Decision string    `json:"decision"` // DecisionKeep or DecisionRemove
	Reason   string    `json:"reason,omitempty"`
	Reviewer string    `json:"reviewer"`
	Time     time.Time `json:"time,omitzero"`
	Seq      uint64    `json:"seq,omitzero"` // its audit record
}

// maxReviewSerials bounds the serials listed per line.
const maxReviewSerials = 20

// Review builds the access review of the period since since, one line per
// user and tier that the user is entitled to or used, sorted by user then
// tier order in the policy.
func (a *Admin) Review(ctx context.Context, since time.Time) ([]ReviewLine, error) {
	lines := map[[2]string]*ReviewLine{}
	line := func(user, tier string) *ReviewLine {
		k := [2]string{user, tier}
		if l := lines[k]; l != nil {
			return l
		}
		l := &ReviewLine{User: user, Tier: tier}
		lines[k] = l
		return l
	}
	var signoffs []store.AuditEvent
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		users, err := tx.ListUsers()
		if err != nil {
			return err
		}
		for _, u := range users {
			id := policy.Identity{User: u.Name, Groups: u.Groups}
			for _, tier := range a.cfg.Policy.TiersFor(id) {
				l := line(u.Name, tier)
				l.Known, l.Entitled = true, true
				if t, ok := a.cfg.Policy.Tier(tier); ok {
					for _, g := range u.Groups {
						if slices.Contains(t.Groups(), g) {
							l.Groups = append(l.Groups, g)
						}
					}
				}
			}
		}
		known := map[string]bool{}
		for _, u := range users {
			known[u.Name] = true
		}
		certs, err := tx.ListCerts(store.CertFilter{Kind: store.CertKindUser, IssuedSince: since})
		if err != nil {
			return err
		}
		for _, c := range certs {
			l := line(c.Identity, c.Tier)
			l.Known = known[c.Identity]
			l.Certificates++
			if c.IssuedAt.After(l.LastIssued) {
				l.LastIssued = c.IssuedAt
			}
			if len(l.Serials) < maxReviewSerials {
				l.Serials = append(l.Serials, c.Serial)
			}
		}
		reqs, err := tx.ListRequests(store.RequestFilter{})
		if err != nil {
			return err
		}
		for _, r := range reqs {
			if r.CreatedAt.Before(since) {
				continue
			}
			l := line(r.Requester, r.Tier)
			l.Known = known[r.Requester]
			l.Requests++
			if !r.UsedAt.IsZero() {
				l.RequestsUsed++
			}
			if r.SessionID != "" {
				l.Recordings = append(l.Recordings, r.SessionID)
			}
			for _, v := range r.Approvals {
				al := line(v.By, r.Tier)
				al.Known = known[v.By]
				al.ApprovalsGiven++
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ca: review: %w", err)
	}
	if signoffs, err = a.cfg.Store.Audit(ctx, store.AuditFilter{Type: AuditReviewSignoff}); err != nil {
		return nil, fmt.Errorf("ca: review: %w", err)
	}
	for _, ev := range signoffs {
		if ev.Time.Before(since) {
			continue
		}
		if l := lines[[2]string{ev.Subject, ev.Tier}]; l != nil {
			l.SignOff = &ReviewSignOff{User: ev.Subject, Tier: ev.Tier, Decision: ev.Details["decision"], Reason: ev.Reason,
				Reviewer: ev.Actor, Time: ev.Time, Seq: ev.Seq}
		}
	}
	order := map[string]int{}
	for i, t := range a.cfg.Policy.TierNames() {
		order[t] = i
	}
	out := make([]ReviewLine, 0, len(lines))
	for _, l := range lines {
		l.Unused = l.Entitled && l.Certificates == 0 && l.Requests == 0
		out = append(out, *l)
	}
	slices.SortFunc(out, func(x, y ReviewLine) int {
		return cmp.Or(cmp.Compare(x.User, y.User), cmp.Compare(order[x.Tier], order[y.Tier]), cmp.Compare(x.Tier, y.Tier))
	})
	return out, nil
}

// SignOff records a reviewer's decision on one line of the review in the
// audit chain. The line must exist in the current review of the period
// since since (an entitlement or a use), so a typo is refused, not signed.
func (a *Admin) SignOff(ctx context.Context, s ReviewSignOff, since time.Time) (*ReviewSignOff, error) {
	switch {
	case s.Reviewer == "":
		return nil, badSignOff("the reviewer's name is required")
	case s.Decision != DecisionKeep && s.Decision != DecisionRemove:
		return nil, badSignOff(fmt.Sprintf("decision %q is neither %q nor %q", s.Decision, DecisionKeep, DecisionRemove))
	case s.Reviewer == s.User:
		return nil, badSignOff("a reviewer cannot sign off their own access")
	}
	lines, err := a.Review(ctx, since)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(lines, func(l ReviewLine) bool { return l.User == s.User && l.Tier == s.Tier }) {
		return nil, badSignOff(fmt.Sprintf("%s/%s is not a line of the review since %s", s.User, s.Tier, since.UTC().Format(time.DateOnly)))
	}
	s.Reason = strings.TrimSpace(s.Reason)
	ev := store.AuditEvent{Type: AuditReviewSignoff, Actor: s.Reviewer, Subject: s.User, Tier: s.Tier, Reason: s.Reason,
		Details: map[string]string{"decision": s.Decision, "since": since.UTC().Format(time.RFC3339)}}
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error { return a.appendAudit(tx, ev) })
	if err != nil {
		return nil, fmt.Errorf("ca: sign-off: %w", err)
	}
	s.Time = a.cfg.Now().UTC()
	return &s, nil
}

// badSignOff is a refused sign-off, told to the caller as it is (through
// the admin socket too).
func badSignOff(msg string) error {
	return &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "sign-off refused: " + msg}
}
