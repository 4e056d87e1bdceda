package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// Fleet-wide single use (DESIGN.md "Trust invariants"): the CA is the
// authority of use. A host agent claims a single-use certificate's serial
// before the session starts; the claim is one store transaction, so of any
// number of hosts racing on one serial exactly one wins, and the claim is
// in the bbolt file before the agent hears yes. Every later claim, from any
// host, is refused, audited as EventReuseRefused (an alert the notifiers
// get like every audit event) and the user is turned away.

// Audit event types of single-use claims.
const (
	// EventSingleUseClaim records the first use of a single-use
	// certificate that no access request bought (with a request, the
	// request.use event records it).
	EventSingleUseClaim = "single_use.claim"
	// EventReuseRefused records a second use of a single-use certificate:
	// an alert (Details["severity"] = "alert").
	EventReuseRefused = "request.reuse_refused"
)

const (
	// claimMargin keeps a claim past its certificate's expiry, so that a
	// host whose clock runs behind the CA's cannot admit the certificate
	// again after the claim was pruned.
	claimMargin = 10 * time.Minute
	// claimPruneBatch bounds how many expired claims one claim removes.
	claimPruneBatch = 16
)

// ClaimSingleUse claims the single-use certificate serial for the host
// whose certificate is host. clientAddr is the host's address as the CA
// sees it; claim.ClientAddr the SSH client's as the host sees it.
func (a *Authority) ClaimSingleUse(ctx context.Context, host *ssh.Certificate, serial uint64, claim api.SingleUseClaim, clientAddr string) (*api.SingleUseClaimed, error) {
	hostName := firstName(host.ValidPrincipals)
	ev := store.AuditEvent{Type: EventSingleUseClaim, Actor: hostName, Serial: serial, RequestID: claim.RequestID, ClientAddr: claim.ClientAddr,
		Details: map[string]string{"host": hostName, "host_addr": clientAddr, "session_id": claim.SessionID}}
	out, err := a.claimSingleUse(ctx, host, serial, claim, clientAddr, &ev)
	if err != nil {
		var ref *Refusal
		if errors.As(err, &ref) && ref.Code == api.CodeAlreadyUsed {
			return nil, err // audited as EventReuseRefused in the claim's transaction
		}
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return out, nil
}

func (a *Authority) claimSingleUse(ctx context.Context, host *ssh.Certificate, serial uint64, claim api.SingleUseClaim, clientAddr string, ev *store.AuditEvent) (*api.SingleUseClaimed, error) {
	if err := claim.Check(); err != nil {
		return nil, badRequest(err, "single-use claim: %v", err)
	}
	if serial == 0 {
		return nil, badRequest(nil, "single-use claim: serial is required")
	}
	hostTier, err := a.HostTier(ctx, host.Serial)
	if err != nil {
		return nil, err
	}
	var rec *store.CertRecord
	err = a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = tx.GetCert(serial)
		return err
	})
	if errors.Is(err, store.ErrNotFound) || err == nil && rec.Kind != store.CertKindUser {
		return nil, refuse(api.CodeNotFound, http.StatusNotFound, err, "certificate serial %d is not a user certificate issued by this CA", serial)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: claim serial %d: %w", serial, err)
	}
	ev.Subject, ev.Tier, ev.KeyID = rec.Identity, rec.Tier, rec.KeyID
	switch {
	case !slices.Contains(a.cfg.Policy.HostTrust(hostTier), rec.Tier):
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "hosts of tier %s do not accept %s certificates: serial %d cannot be used here", hostTier, rec.Tier, serial)
	case claim.RequestID != rec.RequestID:
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "certificate serial %d was not issued for access request %q", serial, claim.RequestID)
	}
	now := a.cfg.Now().UTC()
	if !now.Before(rec.ValidBefore) {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "certificate serial %d expired at %s", serial, rec.ValidBefore.Format(time.RFC3339))
	}
	var targets []string
	if rec.RequestID != "" {
		r, err := a.loadRequest(ctx, rec.RequestID, now)
		if err != nil {
			return nil, err
		}
		targets = r.Hosts
	}
	if len(targets) > 0 && !hostListed(host.ValidPrincipals, targets) {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "certificate serial %d is for %s only, not %s", serial, strings.Join(targets, ", "), hostOf(host))
	}

	mine := store.Claim{Serial: serial, RequestID: rec.RequestID, Host: hostOf(host), SessionID: claim.SessionID,
		ClientAddr: claim.ClientAddr, ClaimedAt: now, ExpiresAt: rec.ValidBefore.Add(claimMargin)}
	var first *store.Claim // the earlier claim when this one is refused
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		first = nil // the closure may run again: recompute from tx
		if _, err := tx.DeleteExpiredClaims(now, claimPruneBatch); err != nil {
			return err
		}
		c := mine
		prev, err := tx.ClaimSerial(&c)
		switch {
		case errors.Is(err, store.ErrClaimed):
			if prev.Host == mine.Host && prev.SessionID == mine.SessionID {
				return nil // the same connection asking again (a lost answer): same yes
			}
			first = prev
			e := *ev
			e.Type, e.Outcome, e.Time = EventReuseRefused, store.OutcomeRefused, now
			e.Reason = "single-use certificate already used"
			e.Details = map[string]string{
				"severity": "alert", "host": mine.Host, "host_addr": clientAddr, "session_id": mine.SessionID,
				"first_host": prev.Host, "first_session_id": prev.SessionID, "first_client_addr": prev.ClientAddr,
				"first_claimed_at": prev.ClaimedAt.Format(time.RFC3339),
			}
			return a.appendAudit(tx, e)
		case err != nil:
			return err
		}
		if rec.RequestID == "" {
			e := *ev
			e.Outcome, e.Time, e.Reason = store.OutcomeOK, now, "single-use certificate used"
			return a.appendAudit(tx, e)
		}
		return a.markUsed(tx, rec.RequestID, mine, *ev)
	})
	if err != nil {
		return nil, requestStoreErr("claim serial for", rec.RequestID, err)
	}
	if first != nil {
		a.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "ALERT: single-use certificate used again", slog.Bool("alert", true),
			slog.Uint64("serial", serial), slog.String("request_id", rec.RequestID), slog.String("host", mine.Host),
			slog.String("client", mine.ClientAddr), slog.String("first_host", first.Host))
		return nil, refuse(api.CodeAlreadyUsed, http.StatusConflict, store.ErrClaimed,
			"this single-use certificate was already used (on %s at %s): ask for a new access request with sshward request",
			first.Host, first.ClaimedAt.Format(time.RFC3339))
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "single-use certificate claimed", slog.Uint64("serial", serial),
		slog.String("request_id", rec.RequestID), slog.String("host", mine.Host), slog.String("client", mine.ClientAddr))
	return &api.SingleUseClaimed{Serial: serial, Host: mine.Host, ClaimedAt: now, RequestID: rec.RequestID}, nil
}

// markUsed moves the request behind a claimed certificate from issued to
// done inside the claim's transaction, with its request.use event.
func (a *Authority) markUsed(tx *store.Tx, id string, c store.Claim, ev store.AuditEvent) error {
	r, err := tx.GetRequest(id)
	if err != nil {
		return err
	}
	if r.State != api.StateIssued || r.IssuedSerial != c.Serial {
		// The claim is what enforces single use; a request in another
		// state (expired by an admin, say) is left alone.
		return nil
	}
	r.State, r.UsedAt, r.UsedOn, r.SessionID = api.StateDone, c.ClaimedAt, c.Host, c.SessionID
	if err := tx.PutRequest(r); err != nil {
		return err
	}
	ev.Type, ev.Subject, ev.Tier, ev.RequestID = EventRequestUse, r.Requester, r.Tier, r.ID
	ev.Outcome, ev.Reason, ev.Time = store.OutcomeOK, "single-use certificate used", c.ClaimedAt
	ev.Details = map[string]string{"request_reason": r.Reason, "state": r.State, "host": c.Host, "session_id": c.SessionID}
	return a.appendAudit(tx, ev)
}

// hostListed reports whether one of a host certificate's principals is
// among the target hosts (compared in lower case).
func hostListed(principals, targets []string) bool {
	for _, p := range principals {
		if slices.Contains(targets, strings.ToLower(p)) {
			return true
		}
	}
	return false
}

func hostOf(host *ssh.Certificate) string { return firstName(host.ValidPrincipals) }
