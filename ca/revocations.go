package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// revocationHub wakes revocation watchers (the push stream to agents and
// playback servers) when a revocation commits. It carries no data: each
// watcher reads what it has not seen from the store's revocation log, so a
// slow watcher never holds up the others and nothing is lost or reordered.
// The zero value is ready; it lives in the Admin (no global state).
type revocationHub struct {
	mu sync.Mutex    // guards ch
	ch chan struct{} // closed by publish; nil until someone waits
}

// changed returns a channel closed at the next publish. Take it before
// reading the store, so that a commit in between is not missed.
func (h *revocationHub) changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch == nil {
		h.ch = make(chan struct{})
	}
	return h.ch
}

// publish wakes every watcher. Call it after the revocation committed.
func (h *revocationHub) publish() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch != nil {
		close(h.ch)
		h.ch = nil
	}
}

// revokeUser revokes, inside tx, every unexpired user certificate issued
// to user (of tier, when set) by serial, and ends every CA session of
// theirs, with one audit record per certificate. summary, when set, makes
// the closing audit record (given the number of certificates); without
// it one "revoke" record is written when there was no certificate. res
// collects what was revoked. Idempotent, as Update closures must be.
func (a *Admin) revokeUser(tx *store.Tx, user, tier, reason, by string, now time.Time, res *RevokeResult, summary func(certs int) store.AuditEvent) error {
	// Every certificate of the user is scanned: revocation by user is
	// rare, and an index by serial time would miss certificates whose
	// serials do not follow the current scheme.
	recs, err := tx.ListCerts(store.CertFilter{Kind: store.CertKindUser, Identity: user, Tier: tier})
	if err != nil {
		return err
	}
	n := 0
	for _, rec := range recs {
		if !now.Before(rec.ValidBefore) {
			continue
		}
		r := store.Revocation{Tier: rec.Tier, Serial: rec.Serial, KeyID: rec.KeyID, Reason: reason, At: now, By: by}
		if err := tx.AddRevocation(&r); err != nil {
			return err
		}
		n++
		res.Serials = append(res.Serials, rec.Serial)
		if !slices.Contains(res.Tiers, rec.Tier) {
			res.Tiers = append(res.Tiers, rec.Tier)
		}
		if err := a.appendAudit(tx, store.AuditEvent{Type: "revoke", Actor: by, Subject: user, Tier: rec.Tier,
			Serial: rec.Serial, KeyID: rec.KeyID, Outcome: "ok", Reason: reason}); err != nil {
			return err
		}
	}
	if res.Sessions, err = tx.RevokeUserSessions(user, now); err != nil {
		return err
	}
	switch {
	case summary != nil:
		return a.appendAudit(tx, summary(n))
	case n == 0:
		return a.appendAudit(tx, store.AuditEvent{Type: "revoke", Actor: by, Subject: user, Outcome: "ok", Reason: reason,
			Details: map[string]string{"sessions_revoked": fmt.Sprint(res.Sessions)}})
	}
	return nil
}

// DisableResult reports what disabling a user revoked.
type DisableResult struct {
	Name     string   `json:"name"`
	Serials  []uint64 `json:"serials_revoked"`
	Sessions int      `json:"sessions_revoked"`
}

// DisableUser disables a local user: in one transaction the user is marked
// disabled (no login, answered like a wrong password), every unexpired
// certificate issued to them is revoked and every CA session ended.
// Disabling a disabled user revokes again what may have been issued since.
func (a *Admin) DisableUser(ctx context.Context, name, reason, by string) (*DisableResult, error) {
	now := a.cfg.Now().UTC()
	if reason == "" {
		reason = "user disabled"
	}
	var res RevokeResult
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		res = RevokeResult{}
		u, err := tx.GetUser(name)
		if err != nil {
			return ErrUserNotFound
		}
		if u.DisabledAt.IsZero() {
			u.DisabledAt = now
		}
		if err := tx.PutUser(u); err != nil {
			return err
		}
		return a.revokeUser(tx, name, "", reason, orAdmin(by), now, &res, func(n int) store.AuditEvent {
			return store.AuditEvent{Type: "user.disable", Actor: orAdmin(by), Subject: name, Outcome: "ok", Reason: reason,
				Details: map[string]string{"sessions_revoked": fmt.Sprint(res.Sessions), "certs_revoked": fmt.Sprint(n)}}
		})
	})
	a.sessions.dropUser(name)
	if errors.Is(err, ErrUserNotFound) {
		return nil, refuse(api.CodeNotFound, http.StatusNotFound, err, "no user named %s", name)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: disable user %q: %w", name, err)
	}
	a.revs.publish()
	a.cfg.Logger.Info("user disabled", "user", name, "serials_revoked", res.Serials, "sessions_revoked", res.Sessions, "by", orAdmin(by))
	return &DisableResult{Name: name, Serials: orEmpty(res.Serials), Sessions: res.Sessions}, nil
}

// EnableUser lets a disabled user log in again. What was revoked stays
// revoked: the user logs in and gets new certificates.
func (a *Admin) EnableUser(ctx context.Context, name, by string) error {
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		u, err := tx.GetUser(name)
		if err != nil {
			return ErrUserNotFound
		}
		was := u.DisabledAt
		u.DisabledAt = time.Time{}
		if err := tx.PutUser(u); err != nil {
			return err
		}
		ev := store.AuditEvent{Type: "user.enable", Actor: orAdmin(by), Subject: name, Outcome: "ok"}
		if !was.IsZero() {
			ev.Details = map[string]string{"disabled_at": was.UTC().Format(time.RFC3339)}
		}
		return a.appendAudit(tx, ev)
	})
	if errors.Is(err, ErrUserNotFound) {
		return refuse(api.CodeNotFound, http.StatusNotFound, err, "no user named %s", name)
	}
	if err != nil {
		return fmt.Errorf("ca: enable user %q: %w", name, err)
	}
	return nil
}

func orEmpty(s []uint64) []uint64 {
	if s == nil {
		return []uint64{}
	}
	return s
}

// IsHostCertRevoked reports whether a host certificate was revoked, by
// serial or by key id (host routes and the playback server refuse it).
func (a *Admin) IsHostCertRevoked(ctx context.Context, cert *ssh.Certificate) bool {
	revoked := false
	_ = a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		set, err := tx.Revocations(HostRevocationTier)
		if err == nil {
			_, bySerial := slices.BinarySearch(set.Serials, cert.Serial)
			_, byKeyID := slices.BinarySearch(set.KeyIDs, cert.KeyId)
			revoked = bySerial || byKeyID
		}
		return err
	})
	return revoked
}

// RevocationsChanged returns a channel closed when the next revocation
// commits (in this process). Take it before reading revocations.
func (a *Admin) RevocationsChanged() <-chan struct{} { return a.revs.changed() }

// RevocationTiers returns the revocation tiers a watcher of scope sees: a
// host tier's trusted user-CA tiers, or for api.HostsScope the revoked
// host certificates.
func (a *Authority) RevocationTiers(scope string) ([]string, error) {
	if scope == api.HostsScope {
		return []string{HostRevocationTier}, nil
	}
	if _, ok := a.cfg.Policy.Tier(scope); !ok {
		return nil, refuse(api.CodeUnknownTier, http.StatusNotFound, nil, "unknown tier %q", scope)
	}
	return a.cfg.Policy.HostTrust(scope), nil
}

// RevocationSnapshot is the whole list of scope (a host tier, or
// api.HostsScope) with the log position it includes.
func (a *Authority) RevocationSnapshot(ctx context.Context, scope string) (*api.RevocationList, error) {
	if scope != api.HostsScope {
		return a.HostRevocations(ctx, scope)
	}
	out := &api.RevocationList{Tier: scope, GeneratedAt: a.cfg.Now().UTC()}
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		set, err := tx.Revocations(HostRevocationTier)
		out.Generation, out.Serials, out.KeyIDs, out.Seq = set.Generation, set.Serials, set.KeyIDs, tx.RevocationSeq()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ca: revoked hosts: %w", err)
	}
	if out.Serials == nil {
		out.Serials = []uint64{}
	}
	if out.KeyIDs == nil {
		out.KeyIDs = []string{}
	}
	return out, nil
}

// RevocationsSince returns, as stream events, the revocations of tiers
// logged after since (at most limit), the log position scanned up to, and
// whether more are waiting.
func (a *Authority) RevocationsSince(ctx context.Context, tiers []string, since uint64, limit int) ([]api.RevocationEvent, uint64, bool, error) {
	var (
		revs    []store.Revocation
		scanned uint64
		more    bool
	)
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		revs, scanned, more, err = tx.RevocationsSince(since, tiers, limit)
		return err
	})
	if err != nil {
		return nil, since, false, fmt.Errorf("ca: revocations since %d: %w", since, err)
	}
	out := make([]api.RevocationEvent, 0, len(revs))
	for _, r := range revs {
		ev := api.RevocationEvent{Type: api.EventRevoke, Seq: r.Seq, Tier: r.Tier, Serial: r.Serial, At: r.At, Notice: r.Notice}
		if r.Serial == 0 {
			ev.KeyID = r.KeyID
		}
		out = append(out, ev)
	}
	return out, scanned, more, nil
}

// RevocationHead returns the latest revocation log position.
func (a *Authority) RevocationHead(ctx context.Context) (uint64, error) {
	var head uint64
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		head = tx.RevocationSeq()
		return nil
	})
	return head, err
}

// revocationMaxStale is the MaxStale of a list covering tiers.
func (a *Authority) revocationMaxStale(tiers []string) map[string]api.Duration {
	out := map[string]api.Duration{}
	for _, name := range tiers {
		if t, ok := a.cfg.Policy.Tier(name); ok {
			out[name] = api.Duration(t.RevocationMaxStale)
		}
	}
	return out
}

// VerifyPlaybackClient checks a TLS client certificate chain presented to
// the CA: a playback server's, issued from the CA's internal root at join.
// It returns the first name the certificate carries.
func (a *Authority) VerifyPlaybackClient(chain []*x509.Certificate) (string, error) {
	root := a.cfg.TLSRoot
	if root == nil || len(chain) == 0 {
		return "", errors.New("ca: no TLS root to verify a client certificate against")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert())
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	// The leaf is a server certificate (playback join issues serverAuth):
	// any usage is accepted, the root is what vouches for it.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: a.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return "", fmt.Errorf("ca: client certificate: %w", err)
	}
	name := leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	} else if len(leaf.IPAddresses) > 0 {
		name = leaf.IPAddresses[0].String()
	}
	return name, nil
}

// sessionStillLive refuses, inside the issuance transaction, a session
// revoked since it was authenticated (user removed or disabled meanwhile).
func sessionStillLive(tx *store.Tx, id string) error {
	live, err := tx.SessionNotRevoked(id)
	if err != nil {
		return err
	}
	if !live {
		return ErrSessionInvalid
	}
	return nil
}

// AuditHostRefused records a refused host request (a revoked host
// certificate that verified). A failure to audit is only logged.
func (a *Admin) AuditHostRefused(ctx context.Context, cert *ssh.Certificate, what, clientAddr, reason string) {
	ev := store.AuditEvent{Type: "host.refused", Actor: "host:" + firstName(cert.ValidPrincipals), Subject: firstName(cert.ValidPrincipals),
		Serial: cert.Serial, KeyID: cert.KeyId, ClientAddr: clientAddr, Outcome: "refused", Reason: reason,
		Details: map[string]string{"request": what}}
	if err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error { return a.appendAudit(tx, ev) }); err != nil {
		a.cfg.Logger.Error("audit host refusal", "err", err)
	}
	a.cfg.Logger.Warn("revoked host refused", "host", ev.Subject, "serial", cert.Serial, "key_id", cert.KeyId, "client", clientAddr, "request", what)
}
