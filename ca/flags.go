package ca

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// ReportFlag writes a flag an agent raised (issue 13 §2) to the audit log
// as api.EventSessionFlagged, where the notifiers get it. The host must
// be of a tier that accepts the session's tier.
func (a *Authority) ReportFlag(ctx context.Context, host *ssh.Certificate, r api.FlagReport, clientAddr string) error {
	if err := r.Check(); err != nil {
		return badRequest(err, "flag report: %v", err)
	}
	hostTier, err := a.HostTier(ctx, host.Serial)
	if err != nil {
		return err
	}
	if !slices.Contains(a.cfg.Policy.HostTrust(hostTier), r.Tier) {
		return refuse(api.CodeForbidden, http.StatusForbidden, nil, "hosts of tier %s do not accept %s certificates: they cannot report %s sessions", hostTier, r.Tier, r.Tier)
	}
	hostName := hostOf(host)
	ev := store.AuditEvent{Type: api.EventSessionFlagged, Actor: hostName, Subject: r.SessionID, Tier: r.Tier,
		Serial: r.Serial, KeyID: r.KeyID, ClientAddr: clientAddr, Outcome: store.OutcomeOK, Reason: r.Rule + ": " + r.Message,
		Details: map[string]string{"severity": "alert", "rule": r.Rule, "action": r.Action, "on": r.On, "text": r.Text,
			"user": r.Identity, "principal": r.Principal, "host": hostName}}
	if !r.At.IsZero() {
		ev.Details["at"] = r.At.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	if err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error { return a.appendAudit(tx, ev) }); err != nil {
		return fmt.Errorf("ca: flag report: %w", err)
	}
	return nil
}
