package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// ReportUnrecorded writes a host's report of an open tier's session that
// runs unrecorded to the audit log (api.EventSessionUnrecorded, an alert:
// Details["severity"] = "alert", which notifiers get like every event).
// Who reported it is the host certificate's first name, not the report's
// Host; the user is the CA's own record of the certificate serial when it
// issued it. A host may report only sessions of tiers it trusts.
// clientAddr is the host's address as the CA sees it.
func (a *Authority) ReportUnrecorded(ctx context.Context, host *ssh.Certificate, u api.UnrecordedSession, clientAddr string) (*api.UnrecordedReceived, error) {
	if err := u.Check(); err != nil {
		return nil, badRequest(err, "unrecorded session report: %v", err)
	}
	hostTier, err := a.HostTier(ctx, host.Serial)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(a.cfg.Policy.HostTrust(hostTier), u.Tier) {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "hosts of tier %s do not accept %s certificates: they cannot report %s sessions", hostTier, u.Tier, u.Tier)
	}
	hostName := hostOf(host)
	ev := store.AuditEvent{
		Type: api.EventSessionUnrecorded, Actor: hostName, Subject: u.Identity, Tier: u.Tier,
		Serial: u.Serial, KeyID: u.KeyID, ClientAddr: u.ClientAddr, Outcome: store.OutcomeOK, Reason: u.Reason,
		Details: map[string]string{
			"severity": "alert", "event_id": u.EventID, "session_id": u.SessionID, "principal": u.Principal,
			"host": hostName, "host_addr": clientAddr, "phase": u.Phase, "at": u.At.UTC().Format(time.RFC3339Nano),
		},
	}
	if u.Host != "" && u.Host != hostName {
		ev.Details["host_name"] = u.Host // the name the host records sessions under
	}
	if u.Command != "" {
		ev.Details["command"] = u.Command
	}
	if u.Error != "" {
		ev.Details["error"] = u.Error
	}
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		e := ev
		e.Details = maps.Clone(ev.Details) // the closure may run again
		// The CA's record of the serial says who the user is; the host's
		// claim is kept beside it when it differs.
		switch rec, err := tx.GetCert(u.Serial); {
		case err == nil && rec.Kind == store.CertKindUser:
			if rec.Identity != u.Identity {
				e.Subject, e.Details["identity_claimed"] = rec.Identity, u.Identity
			}
			if rec.KeyID != u.KeyID {
				e.KeyID, e.Details["key_id_claimed"] = rec.KeyID, u.KeyID
			}
		case err == nil, errors.Is(err, store.ErrNotFound):
			e.Details["serial_known"] = "no"
		default:
			return err
		}
		return a.appendAudit(tx, e)
	})
	if err != nil {
		return nil, fmt.Errorf("ca: record unrecorded session %s: %w", u.SessionID, err)
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "ALERT: a session runs unrecorded", slog.Bool("alert", true),
		slog.String("session_id", u.SessionID), slog.String("host", hostName), slog.String("tier", u.Tier),
		slog.String("principal", u.Principal), slog.String("serial", strconv.FormatUint(u.Serial, 10)),
		slog.String("reason", u.Reason))
	return &api.UnrecordedReceived{EventID: u.EventID}, nil
}
