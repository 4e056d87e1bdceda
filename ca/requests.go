package ca

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
)

// Access requests (DESIGN.md "Access requests"): dual control for every
// tier whose policy sets approvals > 0. The state machine:
//
//	pending  → approved (N distinct approvers) | denied (any approver, the
//	           requester, or the approval policy) | expired (request_ttl)
//	approved → issued (one certificate) | denied | expired (request_ttl
//	           after the approval: an unused approval is no standing access)
//	issued   → done (the host reported the session)
//
// Every transition is written together with its audit event in one store
// transaction. Expiry is lazy: whoever reads a request that is due writes
// the transition (and its one audit event) first.

// Audit event types of access requests.
const (
	EventRequestCreate  = "request.create"
	EventRequestApprove = "request.approve"
	EventRequestDeny    = "request.deny"
	EventRequestExpire  = "request.expire"
	EventRequestIssue   = "request.issue"
	EventRequestUse     = "request.use"
)

const (
	// ApprovalPolicyTimeout bounds each call to Config.ApprovalPolicy; no
	// answer in time denies (fail closed).
	ApprovalPolicyTimeout = 5 * time.Second
	// maxExtraApprovals caps what an approval policy may add, so that a
	// buggy policy cannot make a request unapprovable by overflow.
	maxExtraApprovals = 16
	// maxListedRequests caps one listing.
	maxListedRequests = 200
	// requestIDChars is the length of the random part of a request id
	// (40 bits: collisions are retried, guessing does not help, ids are
	// authorised per caller anyway).
	requestIDChars = 8
	// systemActor and policyActor name who acted when no person did.
	systemActor = "sshward-ca"
	policyActor = "approval-policy"
)

var errRequestIDTaken = errors.New("ca: request id taken")

// CreateRequest opens an access request for sess's user. Policy decides
// the principals and TTL the eventual certificate carries (the request may
// narrow them), and the approval policy, when configured, may deny the
// request or raise the approvals it needs.
func (a *Authority) CreateRequest(ctx context.Context, sess *store.Session, req api.CreateRequest, clientAddr string) (*api.AccessRequest, error) {
	ev := store.AuditEvent{Type: EventRequestCreate, Actor: sess.User, Subject: sess.User, Tier: req.Tier, ClientAddr: clientAddr,
		Details: map[string]string{"request_reason": req.Reason}}
	out, err := a.createRequest(ctx, sess, req, clientAddr, &ev)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return out, nil
}

func (a *Authority) createRequest(ctx context.Context, sess *store.Session, req api.CreateRequest, clientAddr string, ev *store.AuditEvent) (*api.AccessRequest, error) {
	if err := req.Check(); err != nil {
		return nil, badRequest(err, "access request: %v", err)
	}
	id, err := a.newRequestID()
	if err != nil {
		return nil, err
	}
	// Grant as if approved: the request is refused now, not after two
	// people were paged, when the certificate it asks for could never be
	// issued (unknown tier, not entitled, no MFA, principals, TTL).
	scope, err := api.Scope{Hosts: req.Hosts, Labels: req.Labels}.Normalize()
	if err != nil {
		return nil, badRequest(err, "access request: %v", err)
	}
	now := a.cfg.Now().UTC()
	pr := policy.Request{
		Identity: identityOf(sess), Tier: req.Tier, Principals: req.Principals, TTL: time.Duration(req.TTL),
		ClientAddr: clientAddr, RequestID: id, Approved: true, Scope: scope, Now: now,
	}
	grant, err := a.cfg.Policy.Grant(pr)
	if err != nil {
		return nil, policyRefusal(err)
	}
	t, _ := a.cfg.Policy.Tier(grant.Tier)
	pr.Principals = grant.Principals
	rule := t.RuleFor(pr)
	if rule.Approvals == 0 {
		return nil, noApprovalNeeded(t, rule, scope)
	}
	hosts := scope.Hosts
	rec := store.AccessRequest{
		ID: id, State: api.StatePending, Requester: sess.User, RequesterGroups: sess.Groups, Tier: t.Name,
		Reason: strings.TrimSpace(req.Reason), Principals: grant.Principals, Hosts: hosts, Labels: scope.Labels, TTL: grant.TTL,
		CreatedAt: now, ExpiresAt: now.Add(t.RequestTTL), ApprovalsNeeded: rule.Approvals, ClientAddr: clientAddr,
	}
	ev.RequestID = id
	dec, err := a.review(ctx, rec, "create", "")
	if err != nil {
		return nil, err
	}
	rec.ApprovalsNeeded += dec.ExtraApprovals
	ev.Reason, ev.Outcome = rec.Reason, store.OutcomeOK
	ev.Details = map[string]string{
		"state": rec.State, "principals": joinComma(rec.Principals), "ttl": policy.FormatDuration(rec.TTL),
		"approvals_needed": strconv.Itoa(rec.ApprovalsNeeded), "expires_at": rec.ExpiresAt.Format(time.RFC3339),
	}
	scopeDetails(ev.Details, scope, rule)
	if dec.ExtraApprovals > 0 {
		ev.Details["policy_extra_approvals"] = strconv.Itoa(dec.ExtraApprovals)
		ev.Details["policy_reason"] = dec.Reason
	}
	if err := a.onCallRequest(ctx, &rec, t, dec.ExtraApprovals, now, ev); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		evCopy := *ev
		err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
			if _, err := tx.GetRequest(rec.ID); err == nil {
				return errRequestIDTaken
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			r := rec
			if err := tx.PutRequest(&r); err != nil {
				return err
			}
			return a.appendAudit(tx, evCopy)
		})
		if errors.Is(err, errRequestIDTaken) && attempt < 3 {
			if rec.ID, err = a.newRequestID(); err != nil {
				return nil, err
			}
			ev.RequestID = rec.ID
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ca: create request: %w", err)
		}
		break
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "access request created", slog.String("request_id", rec.ID),
		slog.String("user", sess.User), slog.String("tier", rec.Tier), slog.Int("approvals_needed", rec.ApprovalsNeeded))
	out := a.requestView(&rec, sess, now)
	return &out, nil
}

// ListRequests lists, newest first, the caller's requests (scope
// api.ScopeMine) or the requests of others the caller may decide on
// (api.ScopeApprovable). Without all, only open requests are listed:
// pending, approved and issued ones (mine), pending ones (approvable).
func (a *Authority) ListRequests(ctx context.Context, sess *store.Session, scope string, all bool) (*api.RequestList, error) {
	f := store.RequestFilter{}
	switch scope {
	case api.ScopeMine, "":
		f.Requester = sess.User
		if !all {
			f.States = []string{api.StatePending, api.StateApproved, api.StateIssued}
		}
	case api.ScopeApprovable:
		if !all {
			f.States = []string{api.StatePending}
		}
	default:
		return nil, badRequest(nil, "scope must be %s or %s", api.ScopeMine, api.ScopeApprovable)
	}
	now := a.cfg.Now().UTC()
	recs, err := a.readRequests(ctx, f, now)
	if err != nil {
		return nil, err
	}
	out := &api.RequestList{Requests: []api.AccessRequest{}}
	for i := range recs {
		r := &recs[i]
		if scope == api.ScopeApprovable {
			t, ok := a.cfg.Policy.Tier(r.Tier)
			if !ok || r.Requester == sess.User || !isRequestApprover(sess, r, t) {
				continue
			}
		}
		out.Requests = append(out.Requests, a.requestView(r, sess, now))
		if len(out.Requests) == maxListedRequests {
			break
		}
	}
	return out, nil
}

// GetRequest returns one request, to its requester or to an approver of
// its tier; to anyone else it does not exist.
func (a *Authority) GetRequest(ctx context.Context, sess *store.Session, id string) (*api.AccessRequest, error) {
	now := a.cfg.Now().UTC()
	r, err := a.loadRequest(ctx, id, now)
	if err != nil {
		return nil, err
	}
	if !a.mayView(sess, r) {
		return nil, requestNotFound(r.ID)
	}
	out := a.requestView(r, sess, now)
	return &out, nil
}

// Approve records sess's approval of request id. The requester never
// counts, each person counts once, approvers must be in the tier's approver
// groups (and logged in with MFA when the tier needs it), and the approval
// policy is asked again: if it denies or cannot answer, the request is
// denied (fail closed).
func (a *Authority) Approve(ctx context.Context, sess *store.Session, id string, d api.Decision, clientAddr string) (*api.AccessRequest, error) {
	ev := store.AuditEvent{Type: EventRequestApprove, Actor: sess.User, RequestID: id, ClientAddr: clientAddr}
	out, err := a.approve(ctx, sess, id, d, clientAddr, &ev)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return out, nil
}

func (a *Authority) approve(ctx context.Context, sess *store.Session, id string, d api.Decision, clientAddr string, ev *store.AuditEvent) (*api.AccessRequest, error) {
	if err := d.Check(false); err != nil {
		return nil, badRequest(err, "approval: %v", err)
	}
	now := a.cfg.Now().UTC()
	r, t, err := a.decisionTarget(ctx, id, now, ev)
	if err != nil {
		return nil, err
	}
	// Whoever holds the id learns why they may not approve: ids are shared
	// on purpose (on the incident bridge), and checkVote says what is missing.
	if err := checkVote(sess, r, t); err != nil {
		return nil, err
	}
	dec, err := a.review(ctx, *r, "approve", sess.User)
	if err != nil {
		var ref *Refusal
		if errors.As(err, &ref) && ref.Code == api.CodePolicyDenied {
			a.denyByPolicy(ctx, r.ID, ref.Message, clientAddr, now)
		}
		return nil, err
	}
	vote := store.RequestVote{By: sess.User, At: now, Reason: strings.TrimSpace(d.Reason)}
	var out store.AccessRequest
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		r, err := tx.GetRequest(id)
		if err != nil {
			return err
		}
		// Re-check in the transaction: another approval, a denial or a
		// second click may have landed since the read above.
		if err := checkVote(sess, r, t); err != nil {
			return err
		}
		r.Approvals = append(r.Approvals, vote)
		r.ApprovalsNeeded = max(r.ApprovalsNeeded, requestRule(r, t).Approvals+dec.ExtraApprovals)
		if len(r.Approvals) >= r.ApprovalsNeeded {
			r.State = api.StateApproved
			r.ExpiresAt = now.Add(t.RequestTTL)
		}
		if err := tx.PutRequest(r); err != nil {
			return err
		}
		out = *r
		e := *ev
		e.Outcome, e.Reason, e.Time = store.OutcomeOK, vote.Reason, now
		e.Details = map[string]string{
			"request_reason": r.Reason, "state": r.State,
			"approvals": fmt.Sprintf("%d/%d", len(r.Approvals), r.ApprovalsNeeded),
			"approvers": joinComma(approverNames(r)),
		}
		scopeDetails(e.Details, requestScope(r), requestRule(r, t))
		return a.appendAudit(tx, e)
	})
	if err != nil {
		return nil, requestStoreErr("approve", id, err)
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "access request approved", slog.String("request_id", out.ID),
		slog.String("approver", sess.User), slog.String("state", out.State), slog.Int("approvals", len(out.Approvals)))
	v := a.requestView(&out, sess, now)
	return &v, nil
}

// Deny ends request id. Any approver of its tier may deny it, and so may its
// requester (withdrawing it); a denial needs a reason.
func (a *Authority) Deny(ctx context.Context, sess *store.Session, id string, d api.Decision, clientAddr string) (*api.AccessRequest, error) {
	ev := store.AuditEvent{Type: EventRequestDeny, Actor: sess.User, RequestID: id, ClientAddr: clientAddr}
	out, err := a.deny(ctx, sess, id, d, &ev)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return out, nil
}

func (a *Authority) deny(ctx context.Context, sess *store.Session, id string, d api.Decision, ev *store.AuditEvent) (*api.AccessRequest, error) {
	if err := d.Check(true); err != nil {
		return nil, badRequest(err, "denial: %v", err)
	}
	now := a.cfg.Now().UTC()
	r, t, err := a.decisionTarget(ctx, id, now, ev)
	if err != nil {
		return nil, err
	}
	if r.Requester != sess.User && !isRequestApprover(sess, r, t) {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "denying tier %s requests needs membership in %s (or being the requester)", t.Name, strings.Join(requestRule(r, t).Approvers, ", "))
	}
	if r.Requester != sess.User && t.MFA && !sess.MFA {
		return nil, refuse(api.CodeMFARequired, http.StatusForbidden, nil, "deciding on tier %s requests needs a multi-factor login: log in again with your TOTP code", t.Name)
	}
	var out store.AccessRequest
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		r, err := tx.GetRequest(id)
		if err != nil {
			return err
		}
		if err := a.denyLocked(tx, r, store.RequestVote{By: sess.User, At: now, Reason: strings.TrimSpace(d.Reason)}, *ev); err != nil {
			return err
		}
		out = *r
		return nil
	})
	if err != nil {
		return nil, requestStoreErr("deny", id, err)
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "access request denied", slog.String("request_id", out.ID), slog.String("by", sess.User))
	v := a.requestView(&out, sess, now)
	return &v, nil
}

// denyLocked ends r (read in tx) with vote as the denial, and audits it
// with ev as the template.
func (a *Authority) denyLocked(tx *store.Tx, r *store.AccessRequest, vote store.RequestVote, ev store.AuditEvent) error {
	if r.State != api.StatePending && r.State != api.StateApproved {
		return closedRefusal(r, "deny")
	}
	r.State = api.StateDenied
	r.Denial = &vote
	if err := tx.PutRequest(r); err != nil {
		return err
	}
	role := "approver"
	if vote.By == r.Requester {
		role = "requester"
	}
	ev.Outcome, ev.Reason, ev.Time = store.OutcomeOK, vote.Reason, vote.At
	ev.Details = map[string]string{"request_reason": r.Reason, "state": r.State, "role": role,
		"approvals": fmt.Sprintf("%d/%d", len(r.Approvals), r.ApprovalsNeeded)}
	return a.appendAudit(tx, ev)
}

// denyByPolicy denies a request because the approval policy said no or
// could not answer. A failure here is only logged: the approval that
// triggered it is refused either way.
func (a *Authority) denyByPolicy(ctx context.Context, id, why, clientAddr string, now time.Time) {
	ev := store.AuditEvent{Type: EventRequestDeny, Actor: policyActor, RequestID: id, ClientAddr: clientAddr}
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		r, err := tx.GetRequest(id)
		if err != nil {
			return err
		}
		if r.State != api.StatePending && r.State != api.StateApproved {
			return nil // already ended; nothing to deny
		}
		e := ev
		e.Subject, e.Tier = r.Requester, r.Tier
		return a.denyLocked(tx, r, store.RequestVote{By: policyActor, At: now, Reason: why}, e)
	})
	if err != nil {
		a.cfg.Logger.Error("deny request after approval policy refusal", "request_id", id, "err", err)
	}
}

// ReportRequestUsed marks the request behind a single-use certificate done:
// the host whose certificate is host reports that a session started with
// the certificate serial used.Serial. Reporting again is a no-op.
func (a *Authority) ReportRequestUsed(ctx context.Context, host *ssh.Certificate, id string, used api.RequestUsed, clientAddr string) (*api.AccessRequest, error) {
	ev := store.AuditEvent{Type: EventRequestUse, Actor: firstName(host.ValidPrincipals), RequestID: id, Serial: used.Serial, ClientAddr: clientAddr}
	out, err := a.reportUsed(ctx, host, id, used, &ev)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return out, nil
}

func (a *Authority) reportUsed(ctx context.Context, host *ssh.Certificate, id string, used api.RequestUsed, ev *store.AuditEvent) (*api.AccessRequest, error) {
	if err := used.Check(); err != nil {
		return nil, badRequest(err, "request use: %v", err)
	}
	hostTier, err := a.HostTier(ctx, host.Serial)
	if err != nil {
		return nil, err
	}
	now := a.cfg.Now().UTC()
	r, err := a.loadRequest(ctx, id, now)
	if err != nil {
		return nil, err
	}
	ev.RequestID, ev.Subject, ev.Tier = r.ID, r.Requester, r.Tier
	if !slices.Contains(a.cfg.Policy.HostTrust(hostTier), r.Tier) {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "hosts of tier %s do not accept %s certificates: %s cannot have been used here", hostTier, r.Tier, r.ID)
	}
	if r.IssuedSerial == 0 || r.IssuedSerial != used.Serial {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "certificate serial %d was not issued for %s", used.Serial, r.ID)
	}
	hostName := firstName(host.ValidPrincipals)
	var out store.AccessRequest
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		r, err := tx.GetRequest(r.ID)
		if err != nil {
			return err
		}
		out = *r
		switch r.State {
		case api.StateDone:
			return nil // reported before: idempotent
		case api.StateIssued:
		default:
			return closedRefusal(r, "use")
		}
		r.State, r.UsedAt, r.UsedOn, r.SessionID = api.StateDone, now, hostName, used.SessionID
		if err := tx.PutRequest(r); err != nil {
			return err
		}
		out = *r
		e := *ev
		e.Outcome, e.Reason, e.Time = store.OutcomeOK, "single-use certificate used", now
		e.Details = map[string]string{"request_reason": r.Reason, "state": r.State, "host": hostName, "session_id": used.SessionID}
		return a.appendAudit(tx, e)
	})
	if err != nil {
		return nil, requestStoreErr("report use of", r.ID, err)
	}
	v := a.requestView(&out, nil, now)
	return &v, nil
}

// requestForCert checks that the access request named in req may buy this
// certificate and narrows req to it: the caller's own approved, unused
// request for the same tier; principals within the request's, TTL at most
// the request's. The store transaction that records the certificate marks
// the request issued (markIssued), which is what makes it single use.
func (a *Authority) requestForCert(ctx context.Context, sess *store.Session, req *api.CertRequest) (*store.AccessRequest, error) {
	r, err := a.loadRequest(ctx, req.RequestID, a.cfg.Now().UTC())
	if err != nil {
		return nil, err
	}
	req.RequestID = r.ID
	switch {
	case r.Requester != sess.User:
		return nil, requestNotFound(r.ID)
	case r.Tier != req.Tier:
		return nil, badRequest(nil, "access request %s is for tier %s, not %s", r.ID, r.Tier, req.Tier)
	case r.State == api.StatePending:
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "access request %s has %d of %d approvals: wait for %d more (sshward requests shows it)",
			r.ID, len(r.Approvals), r.ApprovalsNeeded, r.ApprovalsNeeded-len(r.Approvals))
	case r.State != api.StateApproved:
		return nil, closedRefusal(r, "use")
	}
	for _, p := range req.Principals {
		if !slices.Contains(r.Principals, p) {
			return nil, refuse(api.CodePrincipal, http.StatusForbidden, nil, "access request %s was approved for %s, not %q", r.ID, joinComma(r.Principals), p)
		}
	}
	if len(req.Principals) == 0 {
		req.Principals = r.Principals
	}
	switch {
	case req.TTL == 0:
		req.TTL = api.Duration(r.TTL)
	case time.Duration(req.TTL) > r.TTL:
		return nil, refuse(api.CodeTTL, http.StatusBadRequest, nil, "access request %s was approved for at most %s: ask for less (--ttl)", r.ID, policy.FormatDuration(r.TTL))
	}
	return r, nil
}

// markIssued moves request id from approved to issued for certificate
// serial inside the transaction that records the certificate. It re-reads
// the request, so a re-run of the closure and a racing second issuance
// both see the truth.
func (a *Authority) markIssued(tx *store.Tx, id string, serial uint64, keyID string, now time.Time, ev store.AuditEvent) error {
	r, err := tx.GetRequest(id)
	if err != nil {
		return err
	}
	if r.State != api.StateApproved || r.IssuedSerial != 0 {
		return closedRefusal(r, "use")
	}
	if !now.Before(r.ExpiresAt) {
		return refuse(api.CodeRequestClosed, http.StatusConflict, nil, "access request %s expired at %s: create a new request", r.ID, r.ExpiresAt.Format(time.RFC3339))
	}
	r.State, r.IssuedSerial, r.IssuedAt = api.StateIssued, serial, now
	if err := tx.PutRequest(r); err != nil {
		return err
	}
	ev.Type, ev.Actor, ev.Subject, ev.Tier, ev.RequestID = EventRequestIssue, r.Requester, r.Requester, r.Tier, r.ID
	ev.Serial, ev.KeyID, ev.Outcome, ev.Reason, ev.Time = serial, keyID, store.OutcomeOK, r.Reason, now
	ev.Details = map[string]string{"state": r.State, "approvers": joinComma(approverNames(r))}
	if len(r.Hosts) > 0 {
		ev.Details["hosts"] = joinComma(r.Hosts)
	}
	return a.appendAudit(tx, ev)
}

// requestExtensions are the certificate extensions that let the host agent
// record why the access was given and by whom, without calling the CA.
func requestExtensions(r *store.AccessRequest) map[string]string {
	ext := map[string]string{
		api.ExtReason:    api.ExtReasonValue(r.Reason),
		api.ExtApprovers: joinComma(approverNames(r)),
	}
	if len(r.Hosts) > 0 {
		ext[api.ExtHosts] = joinComma(r.Hosts)
	}
	return ext
}

// review asks the approval policy about r. A denial, an error or no answer
// within ApprovalPolicyTimeout is a refusal with code api.CodePolicyDenied
// (fail closed); the caller leaving is its own error.
func (a *Authority) review(ctx context.Context, r store.AccessRequest, phase, approver string) (PolicyDecision, error) {
	if a.cfg.ApprovalPolicy == nil {
		return PolicyDecision{}, nil
	}
	info := AccessRequestInfo{
		ID: r.ID, Phase: phase, Requester: r.Requester, RequesterGroups: slices.Clone(r.RequesterGroups), Tier: r.Tier,
		Reason: r.Reason, Principals: slices.Clone(r.Principals), TTL: r.TTL, CreatedAt: r.CreatedAt,
		Approvers: approverNames(&r), Approver: approver,
	}
	rctx, cancel := context.WithTimeout(ctx, ApprovalPolicyTimeout)
	defer cancel()
	dec, err := a.cfg.ApprovalPolicy.Review(rctx, info)
	switch {
	case err != nil && ctx.Err() != nil:
		return PolicyDecision{}, fmt.Errorf("ca: approval policy: %w", ctx.Err())
	case err != nil:
		a.cfg.Logger.LogAttrs(ctx, slog.LevelError, "approval policy failed", slog.String("request_id", r.ID), slog.String("phase", phase), slog.String("err", err.Error()))
		why := oneLine(trimPkg(err), 200)
		if errors.Is(err, context.DeadlineExceeded) {
			why = fmt.Sprintf("no answer within %s", ApprovalPolicyTimeout)
		}
		return PolicyDecision{}, refuse(api.CodePolicyDenied, http.StatusForbidden, err,
			"the approval policy is unavailable: %s; the request is refused (fail closed): try again later or ask an administrator", why)
	case dec.Deny:
		why := oneLine(dec.Reason, 200)
		if why == "" {
			why = "no reason given"
		}
		return PolicyDecision{}, refuse(api.CodePolicyDenied, http.StatusForbidden, nil, "the approval policy denied the request: %s", why)
	}
	dec.ExtraApprovals = min(max(dec.ExtraApprovals, 0), maxExtraApprovals)
	dec.Reason = oneLine(dec.Reason, 200)
	return dec, nil
}

// loadRequest reads request id (as typed by a person), expiring it first
// when it is due.
func (a *Authority) loadRequest(ctx context.Context, id string, now time.Time) (*store.AccessRequest, error) {
	norm, err := api.ParseRequestID(id)
	if err != nil {
		return nil, refuse(api.CodeNotFound, http.StatusNotFound, err, "%v: sshward requests lists the ids", err)
	}
	var r *store.AccessRequest
	read := func() error {
		return a.cfg.Store.View(ctx, func(tx *store.Tx) error {
			var err error
			r, err = tx.GetRequest(norm)
			return err
		})
	}
	if err := read(); err != nil {
		return nil, requestStoreErr("read", norm, err)
	}
	if isDue(r, now) {
		if err := a.expire(ctx, []string{norm}, now); err != nil {
			return nil, err
		}
		if err := read(); err != nil {
			return nil, requestStoreErr("read", norm, err)
		}
	}
	return r, nil
}

// readRequests lists requests matching f after expiring those that are due.
func (a *Authority) readRequests(ctx context.Context, f store.RequestFilter, now time.Time) ([]store.AccessRequest, error) {
	var recs []store.AccessRequest
	list := func() error {
		return a.cfg.Store.View(ctx, func(tx *store.Tx) error {
			var err error
			recs, err = tx.ListRequests(f)
			return err
		})
	}
	if err := list(); err != nil {
		return nil, fmt.Errorf("ca: list requests: %w", err)
	}
	var due []string
	for i := range recs {
		if isDue(&recs[i], now) {
			due = append(due, recs[i].ID)
		}
	}
	if len(due) == 0 {
		return recs, nil
	}
	if err := a.expire(ctx, due, now); err != nil {
		return nil, err
	}
	if err := list(); err != nil {
		return nil, fmt.Errorf("ca: list requests: %w", err)
	}
	return recs, nil
}

// expire moves the requests named that are due at now to expired, each
// with one request.expire event. The closure re-reads every request, so a
// request expired (or decided) by someone else meanwhile is left alone and
// no event is written twice.
func (a *Authority) expire(ctx context.Context, ids []string, now time.Time) error {
	var expired []string
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		expired = expired[:0]
		for _, id := range ids {
			r, err := tx.GetRequest(id)
			if err != nil {
				return err
			}
			if !isDue(r, now) {
				continue
			}
			was := r.State
			r.State = api.StateExpired
			if err := tx.PutRequest(r); err != nil {
				return err
			}
			why := fmt.Sprintf("pending for %s with %d of %d approvals", policy.FormatDuration(r.ExpiresAt.Sub(r.CreatedAt)), len(r.Approvals), r.ApprovalsNeeded)
			if was == api.StateApproved {
				why = "approved but not used in time"
			}
			err = a.appendAudit(tx, store.AuditEvent{Type: EventRequestExpire, Time: now, Actor: systemActor, Subject: r.Requester, Tier: r.Tier,
				RequestID: r.ID, Outcome: store.OutcomeOK, Reason: why,
				Details: map[string]string{"request_reason": r.Reason, "state": r.State, "was": was, "expires_at": r.ExpiresAt.Format(time.RFC3339)}})
			if err != nil {
				return err
			}
			expired = append(expired, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ca: expire requests: %w", err)
	}
	for _, id := range expired {
		a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "access request expired", slog.String("request_id", id))
	}
	return nil
}

func isDue(r *store.AccessRequest, now time.Time) bool {
	return (r.State == api.StatePending || r.State == api.StateApproved) && !now.Before(r.ExpiresAt)
}

// checkVote refuses an approval sess may not give on r.
func checkVote(sess *store.Session, r *store.AccessRequest, t *policy.Tier) error {
	switch {
	case r.State != api.StatePending:
		return closedRefusal(r, "approve")
	case r.Requester == sess.User:
		return refuse(api.CodeForbidden, http.StatusForbidden, nil, "you cannot approve your own request %s: ask someone in %s", r.ID, strings.Join(requestRule(r, t).Approvers, ", "))
	case !isRequestApprover(sess, r, t):
		return refuse(api.CodeForbidden, http.StatusForbidden, nil, "approving tier %s requests needs membership in %s", t.Name, strings.Join(requestRule(r, t).Approvers, ", "))
	case t.MFA && !sess.MFA:
		return refuse(api.CodeMFARequired, http.StatusForbidden, nil, "approving tier %s requests needs a multi-factor login: log in again with your TOTP code", t.Name)
	case slices.ContainsFunc(r.Approvals, func(v store.RequestVote) bool { return v.By == sess.User }):
		return refuse(api.CodeRequestClosed, http.StatusConflict, nil, "you already approved %s; each person counts once: it needs %d more from someone else",
			r.ID, r.ApprovalsNeeded-len(r.Approvals))
	}
	return checkSeparation(sess, r, t)
}

// closedRefusal explains why request r no longer allows action.
func closedRefusal(r *store.AccessRequest, action string) error {
	var why string
	switch r.State {
	case api.StateApproved:
		why = "it is already approved"
	case api.StateDenied:
		why = "it was denied"
		if r.Denial != nil {
			why = fmt.Sprintf("it was denied by %s (%s)", r.Denial.By, r.Denial.Reason)
		}
	case api.StateExpired:
		why = fmt.Sprintf("it expired at %s", r.ExpiresAt.Format(time.RFC3339))
	case api.StateIssued, api.StateDone:
		why = fmt.Sprintf("it was already used for certificate serial %d (a request buys one certificate)", r.IssuedSerial)
	default:
		why = "it is " + r.State
	}
	fix := "create a new request with sshward request"
	if r.State == api.StateApproved && action != "use" {
		fix = "nothing more is needed"
	}
	return refuse(api.CodeRequestClosed, http.StatusConflict, nil, "cannot %s access request %s: %s: %s", action, r.ID, why, fix)
}

// decisionTarget loads the request an approval or denial is about, with its
// tier, and names it in the audit event ev.
func (a *Authority) decisionTarget(ctx context.Context, id string, now time.Time, ev *store.AuditEvent) (*store.AccessRequest, *policy.Tier, error) {
	r, err := a.loadRequest(ctx, id, now)
	if err != nil {
		return nil, nil, err
	}
	ev.RequestID, ev.Subject, ev.Tier = r.ID, r.Requester, r.Tier
	ev.Details = map[string]string{"request_reason": r.Reason}
	t, err := a.requestTier(r)
	if err != nil {
		return nil, nil, err
	}
	return r, t, nil
}

func (a *Authority) requestTier(r *store.AccessRequest) (*policy.Tier, error) {
	t, ok := a.cfg.Policy.Tier(r.Tier)
	if !ok {
		return nil, refuse(api.CodeUnknownTier, http.StatusConflict, nil, "tier %s of access request %s is no longer in the policy", r.Tier, r.ID)
	}
	return t, nil
}

// mayView: the requester and the approvers of the request's tier.
func (a *Authority) mayView(sess *store.Session, r *store.AccessRequest) bool {
	if r.Requester == sess.User {
		return true
	}
	t, ok := a.cfg.Policy.Tier(r.Tier)
	return ok && isRequestApprover(sess, r, t)
}

// requestView is r as the API shows it to viewer (nil: a host).
func (a *Authority) requestView(r *store.AccessRequest, viewer *store.Session, now time.Time) api.AccessRequest {
	out := api.AccessRequest{
		ID: r.ID, State: r.State, Requester: r.Requester, Tier: r.Tier, Reason: r.Reason,
		Principals: slices.Clone(r.Principals), Hosts: slices.Clone(r.Hosts), TTL: api.Duration(r.TTL), CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt,
		ApprovalsNeeded: r.ApprovalsNeeded, Approvals: []api.Vote{}, IssuedSerial: r.IssuedSerial, IssuedAt: r.IssuedAt, UsedAt: r.UsedAt,
		UsedOn: r.UsedOn, Labels: maps.Clone(r.Labels), Scope: requestScope(r).String(),
	}
	for _, v := range r.Approvals {
		out.Approvals = append(out.Approvals, api.Vote{By: v.By, At: v.At, Reason: v.Reason})
	}
	if r.Denial != nil {
		out.Denial = &api.Vote{By: r.Denial.By, At: r.Denial.At, Reason: r.Denial.Reason}
	}
	if t, ok := a.cfg.Policy.Tier(r.Tier); ok {
		rule := requestRule(r, t)
		out.Approvers = slices.Clone(rule.Approvers)
		out.ApprovalRule, out.SeparateTeams = rule.Name, slices.Clone(rule.SeparateTeams)
		out.CanApprove = viewer != nil && !isDue(r, now) && checkVote(viewer, r, t) == nil
	}
	return out
}

func approverNames(r *store.AccessRequest) []string {
	out := make([]string, 0, len(r.Approvals))
	for _, v := range r.Approvals {
		out = append(out, v.By)
	}
	return out
}

func requestNotFound(id string) error {
	return refuse(api.CodeNotFound, http.StatusNotFound, ErrNotFound, "no access request %s that you may see: sshward requests lists yours and those you may approve", id)
}

// requestStoreErr passes refusals through and names the rest.
func requestStoreErr(op, id string, err error) error {
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		return ref
	case errors.Is(err, store.ErrNotFound):
		return requestNotFound(id)
	}
	return fmt.Errorf("ca: %s request %s: %w", op, id, err)
}

// newRequestID draws "REQ-" and requestIDChars characters of
// api.RequestIDAlphabet (32 symbols: each byte's low 5 bits are uniform).
func (a *Authority) newRequestID() (string, error) {
	var b [requestIDChars]byte
	if _, err := io.ReadFull(a.cfg.Rand, b[:]); err != nil {
		return "", fmt.Errorf("ca: draw request id: %w", err)
	}
	for i := range b {
		b[i] = api.RequestIDAlphabet[b[i]&31]
	}
	return "REQ-" + string(b[:]), nil
}

func identityOf(s *store.Session) policy.Identity {
	return policy.Identity{User: s.User, Groups: s.Groups, MFA: s.MFA}
}

// oneLine makes text from a plugin fit one line of a refusal message.
func oneLine(s string, n int) string {
	s = strings.Join(strings.FieldsFunc(strings.ToValidUTF8(s, "?"), func(r rune) bool { return r < 0x20 || r == 0x7f }), " ")
	s = strings.TrimSpace(s)
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}
