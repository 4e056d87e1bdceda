package ca

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// Ending a live session (issue 13 §1, api.PathSessionsTerminate): the CA
// authorizes the caller by policy (terminate_groups), audits the
// decision, optionally disables the user, and signs an order with the
// host CA key that the session's agents receive on their revocation
// stream. Orders live in memory for api.TerminateOrderTTL: an agent that
// reconnects within it still gets them; after it, they could not be acted
// on anyway. (With several CA replicas an order reaches the agents
// connected to the replica that signed it; see README "Oversight".)

// ErrMayNotTerminate refuses a termination to a user outside the policy's
// terminate_groups.
var ErrMayNotTerminate = errors.New("ca: not allowed to end live sessions")

// maxPendingOrders bounds the orders kept (a flood of terminations by an
// auditor must not grow the CA without bound).
const maxPendingOrders = 4096

// terminateHub keeps recent orders and wakes the streams that send them.
// The zero value is ready.
type terminateHub struct {
	mu     sync.Mutex // guards the fields below
	orders []hubOrder
	next   uint64        // index of the next order published (from 1)
	ch     chan struct{} // closed by publish; nil until someone waits
}

type hubOrder struct {
	n     uint64
	order api.TerminateOrder
}

func (h *terminateHub) publish(o api.TerminateOrder, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pruneLocked(now)
	for _, x := range h.orders {
		if x.order.Nonce == o.Nonce {
			return // already here (this replica signed it, or synced it before)
		}
	}
	if len(h.orders) >= maxPendingOrders {
		h.orders = h.orders[1:]
	}
	h.next++
	h.orders = append(h.orders, hubOrder{n: h.next, order: o})
	if h.ch != nil {
		close(h.ch)
		h.ch = nil
	}
}

func (h *terminateHub) pruneLocked(now time.Time) {
	i := 0
	for i < len(h.orders) && !now.Before(h.orders[i].order.Expires) {
		i++
	}
	h.orders = h.orders[i:]
}

// since returns the unexpired orders after position pos for tiers, the new
// position, and a channel closed at the next publish (taken before the
// read, so that nothing published in between is missed).
func (h *terminateHub) since(pos uint64, tiers []string, now time.Time) ([]api.TerminateOrder, uint64, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch == nil {
		h.ch = make(chan struct{})
	}
	h.pruneLocked(now)
	var out []api.TerminateOrder
	for _, o := range h.orders {
		if o.n > pos && containsTier(tiers, o.order.Tier) {
			out = append(out, o.order)
		}
	}
	return out, h.next, h.ch
}

func containsTier(tiers []string, t string) bool {
	for _, x := range tiers {
		if x == t {
			return true
		}
	}
	return false
}

// TerminateOrdersSince is what the revocation stream sends agents of tiers
// (ca/server): orders after pos, the new position, and a wake-up channel.
func (a *Authority) TerminateOrdersSince(pos uint64, tiers []string) ([]api.TerminateOrder, uint64, <-chan struct{}) {
	return a.terms.since(pos, tiers, a.cfg.Now())
}

// Terminate ends the live session id on behalf of sess's user.
func (a *Authority) Terminate(ctx context.Context, sess *store.Session, id string, req api.TerminateRequest, clientAddr string) (*api.TerminateResponse, error) {
	ev := store.AuditEvent{Type: api.EventSessionTerminate, Actor: sess.User, Subject: id, Tier: req.Tier, ClientAddr: clientAddr,
		Reason: req.Reason, Details: map[string]string{"host": req.Host, "user": req.User, "lock_user": fmt.Sprint(req.LockUser)}}
	if req.Serial != 0 {
		ev.Details["serial"] = fmt.Sprint(req.Serial)
	}
	resp, err := a.terminate(ctx, sess, id, req, &ev)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return resp, nil
}

func (a *Authority) terminate(ctx context.Context, sess *store.Session, id string, req api.TerminateRequest, ev *store.AuditEvent) (*api.TerminateResponse, error) {
	if sess.Scope != "" && sess.Scope != api.ScopeReadRecordings {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, ErrScope, "this token cannot end sessions; use your login session")
	}
	if !a.cfg.Policy.MayTerminate(sess.Groups) {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, ErrMayNotTerminate,
			"%s may not end live sessions: the policy's terminate_groups (default auditors) lists none of your groups", sess.User)
	}
	if id == "" || len(id) > 128 || strings.ContainsAny(id, " /\t\r\n") {
		return nil, badRequest(nil, "session id %q is not one", id)
	}
	if err := req.Check(); err != nil {
		return nil, badRequest(err, "terminate: %v", err)
	}
	if _, ok := a.cfg.Policy.Tier(req.Tier); !ok {
		return nil, badRequest(nil, "terminate: no tier named %s", req.Tier)
	}
	now := a.cfg.Now().UTC()
	var nonce [12]byte
	if _, err := io.ReadFull(a.cfg.Rand, nonce[:]); err != nil {
		return nil, fmt.Errorf("ca: terminate: nonce: %w", err)
	}
	o := api.TerminateOrder{SessionID: id, Host: req.Host, Tier: req.Tier, By: sess.User, Reason: strings.TrimSpace(req.Reason),
		IssuedAt: now, Expires: now.Add(api.TerminateOrderTTL), Nonce: hex.EncodeToString(nonce[:])}
	if err := o.Sign(rand.Reader, a.hostCA()); err != nil {
		return nil, fmt.Errorf("ca: terminate: %w", err)
	}
	ev.Outcome = "ok"
	ev.Time = now
	ev.Reason = o.Reason
	// The signed order goes into the audit record: the log is shared by
	// every CA replica, whose RunTerminateSync hands it to its agents.
	ev.Details["order_nonce"], ev.Details["order_signature"] = o.Nonce, o.Signature
	ev.Details["order_issued_at"] = o.IssuedAt.Format(time.RFC3339Nano)
	ev.Details["order_expires"] = o.Expires.Format(time.RFC3339Nano)
	if err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error { return a.appendAudit(tx, *ev) }); err != nil {
		return nil, fmt.Errorf("ca: terminate: audit: %w", err)
	}
	// Audited first: an order no record explains is never sent.
	a.terms.publish(o, now)
	a.cfg.Logger.Warn("live session terminated", "session_id", id, "host", req.Host, "tier", req.Tier, "by", sess.User, "reason", o.Reason)
	resp := &api.TerminateResponse{SessionID: id, By: sess.User, At: now}
	if req.LockUser && req.User != "" {
		_, err := a.DisableUser(ctx, req.User, "locked with the termination of session "+id+": "+o.Reason, sess.User)
		switch {
		case errors.Is(err, ErrUserNotFound):
			// Not a local user (OIDC): nothing to disable here.
			a.cfg.Logger.Warn("terminate: cannot lock a user the CA does not hold", "user", req.User)
		case err != nil:
			return resp, fmt.Errorf("ca: terminate: lock user: %w", err)
		default:
			resp.Locked = true
		}
	}
	return resp, nil
}

// FlagRuleSet is what the revocation stream's hello tells the agents of
// scope (a tier) about flags: the tier's rules (issue 13 §2); nil for
// another scope.
func (a *Authority) FlagRuleSet(scope string) *api.FlagRuleSet {
	if _, ok := a.cfg.Policy.Tier(scope); !ok {
		return nil
	}
	return &api.FlagRuleSet{Rules: a.cfg.Policy.FlagRules(scope)}
}
