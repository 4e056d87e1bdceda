package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/krl"
	"github.com/sshward/sshward/ca/store"
)

// DefaultHostCertTTL applies when the policy sets none. Host certificates
// expire and are renewed by the agent with its current certificate.
const DefaultHostCertTTL = 24 * time.Hour

// JoinHost exchanges a one-time join token for a host certificate whose
// principals are the names the token was made for.
func (a *Authority) JoinHost(ctx context.Context, req api.JoinRequest, clientAddr string) (*api.HostCertResponse, error) {
	ev := store.AuditEvent{Type: "host.join", ClientAddr: clientAddr}
	resp, err := a.joinHost(ctx, req, clientAddr, &ev)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return resp, nil
}

func (a *Authority) joinHost(ctx context.Context, req api.JoinRequest, clientAddr string, ev *store.AuditEvent) (*api.HostCertResponse, error) {
	if err := req.Check(); err != nil {
		return nil, badRequest(err, "join request: %v", err)
	}
	pub, err := parseClientKey(req.PublicKey)
	if err != nil {
		return nil, err
	}
	id, now := tokenID(req.Token), a.cfg.Now()
	tok, err := a.liveJoinToken(ctx, id, now, store.JoinKindHost, "sshward-ca join-token --host NAME --tier T")
	if tok != nil {
		ev.Subject, ev.Tier, ev.Actor = firstName(tok.Names), tok.Tier, "host:"+firstName(tok.Names)
	}
	if err != nil {
		return nil, err
	}
	if req.Tier != "" && req.Tier != tok.Tier {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "this join token is for tier %s, not %s: start the agent with --tier %s", tok.Tier, req.Tier, tok.Tier)
	}
	return a.signHost(ctx, pub, tok.Names, tok.Tier, clientAddr, ev, func(tx *store.Tx) error {
		if _, err := tx.ConsumeJoinToken(id, now); err != nil {
			return ErrTokenInvalid
		}
		return nil
	})
}

// RenewHost issues a fresh certificate to a host that proved possession of
// its current, valid, unrevoked host certificate (checked by hostauth).
func (a *Authority) RenewHost(ctx context.Context, current *ssh.Certificate, req api.RenewRequest, clientAddr string) (*api.HostCertResponse, error) {
	ev := store.AuditEvent{Type: "host.renew", Subject: firstName(current.ValidPrincipals), Actor: "host:" + firstName(current.ValidPrincipals), ClientAddr: clientAddr, Serial: current.Serial}
	var rec *store.CertRecord
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = tx.GetCert(current.Serial)
		return err
	})
	if err != nil || rec.Kind != "host" {
		r := refuse(api.CodeForbidden, http.StatusForbidden, err, "this host certificate is not known to the CA: join again with a new token")
		a.auditRefusal(ctx, ev, r)
		return nil, r
	}
	ev.Tier = rec.Tier
	pub := current.Key
	if req.PublicKey != "" {
		if pub, err = parseClientKey(req.PublicKey); err != nil {
			a.auditRefusal(ctx, ev, err)
			return nil, err
		}
	}
	resp, err := a.signHost(ctx, pub, rec.Principals, rec.Tier, clientAddr, &ev, nil)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return resp, nil
}

// signHost signs and records a host certificate; inTx runs first in the
// same transaction (consuming the join token).
func (a *Authority) signHost(ctx context.Context, pub ssh.PublicKey, names []string, tier, clientAddr string, ev *store.AuditEvent, inTx func(*store.Tx) error) (*api.HostCertResponse, error) {
	ttl := a.hostCertTTL()
	now := a.cfg.Now()
	for attempt := 0; ; attempt++ {
		serial, err := a.serial(ctx)
		if err != nil {
			return nil, err
		}
		cert := &ssh.Certificate{
			Key: pub, Serial: serial, CertType: ssh.HostCert,
			KeyId:           fmt.Sprintf("host %s tier=%s serial=%d", firstName(names), tier, serial),
			ValidPrincipals: names,
			ValidAfter:      uint64(now.Add(-a.cfg.Backdate).Unix()),
			ValidBefore:     uint64(now.Add(ttl).Unix()),
			// The tier travels signed, so that the playback server can bind
			// a recording's tier to the host that uploads it. OpenSSH
			// ignores extensions on host certificates.
			Permissions: ssh.Permissions{Extensions: map[string]string{api.ExtTier: tier}},
		}
		if err := cert.SignCert(a.cfg.Rand, a.hostCA()); err != nil {
			return nil, fmt.Errorf("ca: sign host cert for %q: %w", firstName(names), err)
		}
		rec := &store.CertRecord{
			Serial: serial, KeyID: cert.KeyId, Kind: "host", Tier: tier, Identity: firstName(names),
			Principals: names, ValidAfter: time.Unix(int64(cert.ValidAfter), 0).UTC(),
			ValidBefore: time.Unix(int64(cert.ValidBefore), 0).UTC(), IssuedAt: now.UTC(),
			PublicKeyFP: ssh.FingerprintSHA256(pub), ClientAddr: clientAddr,
		}
		ev.Serial, ev.KeyID, ev.Outcome = serial, cert.KeyId, "ok"
		ev.Details = map[string]string{"names": joinComma(names), "valid_before": rec.ValidBefore.Format(time.RFC3339)}
		evCopy := *ev
		err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
			if inTx != nil {
				if err := inTx(tx); err != nil {
					return err
				}
			}
			if err := tx.PutCert(rec); err != nil {
				return err
			}
			return a.appendAudit(tx, evCopy)
		})
		if errors.Is(err, store.ErrDuplicateSerial) && attempt < 3 {
			continue
		}
		if errors.Is(err, ErrTokenInvalid) {
			return nil, refuse(api.CodeTokenInvalid, http.StatusUnauthorized, err, "the join token is unknown, already used or expired: ask for a new one (sshward-ca join-token)")
		}
		if err != nil {
			return nil, fmt.Errorf("ca: record host cert: %w", err)
		}
		a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "issued host certificate", slog.String("host", firstName(names)),
			slog.String("tier", tier), slog.Uint64("serial", serial))
		return &api.HostCertResponse{
			Certificate: string(ssh.MarshalAuthorizedKey(cert)), Serial: serial, Names: names, Tier: tier,
			ValidBefore: rec.ValidBefore, UserCA: a.hostUserCAs(tier),
			UserCALimits: a.hostUserCALimits(tier),
		}, nil
	}
}

func (a *Authority) hostUserCAs(tier string) []string {
	var out []string
	for _, t := range a.cfg.Policy.HostTrust(tier) {
		for _, k := range a.TrustedUserCAs(t) {
			out = append(out, authorizedKey(k))
		}
	}
	return out
}

// HostRevocations is the list agents of tier poll and cache.
func (a *Authority) HostRevocations(ctx context.Context, tier string) (*api.RevocationList, error) {
	if _, ok := a.cfg.Policy.Tier(tier); !ok {
		return nil, refuse(api.CodeUnknownTier, http.StatusNotFound, nil, "unknown tier %q", tier)
	}
	out := &api.RevocationList{Tier: tier, GeneratedAt: a.cfg.Now().UTC(), Serials: []uint64{}, KeyIDs: []string{},
		MaxStale: a.revocationMaxStale(a.cfg.Policy.HostTrust(tier))}
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		out.Seq = tx.RevocationSeq()
		for _, t := range a.cfg.Policy.HostTrust(tier) {
			set, err := tx.Revocations(t)
			if err != nil {
				return err
			}
			out.Generation += set.Generation
			out.Serials = append(out.Serials, set.Serials...)
			out.KeyIDs = append(out.KeyIDs, set.KeyIDs...)
		}
		return a.addOnCallNotices(tx, out)
	})
	if err != nil {
		return nil, fmt.Errorf("ca: revocations for %s: %w", tier, err)
	}
	slices.Sort(out.Serials)
	out.Serials = slices.Compact(out.Serials)
	slices.Sort(out.KeyIDs)
	out.KeyIDs = slices.Compact(out.KeyIDs)
	return out, nil
}

// KRL renders the OpenSSH KRL for hosts of tier: one certificate section per
// user CA those hosts trust, so a single RevokedKeys file covers them all.
func (a *Authority) KRL(ctx context.Context, tier string) ([]byte, error) {
	if _, ok := a.cfg.Policy.Tier(tier); !ok {
		return nil, refuse(api.CodeUnknownTier, http.StatusNotFound, nil, "unknown tier %q", tier)
	}
	k := &krl.KRL{GeneratedAt: a.cfg.Now(), Comment: "sshward " + tier}
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		for _, t := range a.cfg.Policy.HostTrust(tier) {
			set, err := tx.Revocations(t)
			if err != nil {
				return err
			}
			k.Version += set.Generation
			for _, ca := range a.TrustedUserCAs(t) {
				k.CAs = append(k.CAs, krl.CertSection{CA: ca, Serials: set.Serials, KeyIDs: set.KeyIDs})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ca: krl for %s: %w", tier, err)
	}
	b, err := k.Marshal()
	if err != nil {
		return nil, fmt.Errorf("ca: krl for %s: %w", tier, err)
	}
	return b, nil
}

func firstName(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// HostTier returns the tier a host certificate was issued for.
func (a *Authority) HostTier(ctx context.Context, serial uint64) (string, error) {
	var rec *store.CertRecord
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = tx.GetCert(serial)
		return err
	})
	if err != nil || rec.Kind != "host" {
		return "", refuse(api.CodeForbidden, http.StatusForbidden, err, "this host certificate is not known to the CA: join again with a new token")
	}
	return rec.Tier, nil
}

// metaPlaybackURL is the store key of the registered playback server URL.
const metaPlaybackURL = "playback_url"

// PlaybackURL returns the registered playback server URL ("" when none).
func (a *Authority) PlaybackURL(ctx context.Context) string {
	var v []byte
	_ = a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		v, err = tx.GetMeta(metaPlaybackURL)
		return err
	})
	return string(v)
}

// OIDCClientConfig is what a client needs to start an OIDC login.
func (a *Authority) OIDCClientConfig() *api.OIDCConfig {
	c := a.cfg.OIDCClient
	c.Enabled = a.cfg.OIDC != nil
	return &c
}

// liveJoinToken looks up an unused, unexpired join token of kind before
// anything is signed; ConsumeJoinToken in the write transaction stays the
// authority. ask is the command that makes the right kind of token. The
// token is returned with a kind mismatch too, for the audit record.
func (a *Authority) liveJoinToken(ctx context.Context, id string, now time.Time, kind, ask string) (*store.JoinToken, error) {
	var tok *store.JoinToken
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		tok, err = tx.GetJoinToken(id)
		return err
	})
	if err != nil || !tok.UsedAt.IsZero() || !now.Before(tok.ExpiresAt) {
		return nil, refuse(api.CodeTokenInvalid, http.StatusUnauthorized, ErrTokenInvalid, "the join token is unknown, already used or expired: ask for a new one (%s)", ask)
	}
	if tok.Kind != kind {
		return tok, refuse(api.CodeTokenInvalid, http.StatusForbidden, ErrTokenInvalid, "this join token is for a %s, not a %s: ask for one with %s", tok.Kind, kind, ask)
	}
	return tok, nil
}
