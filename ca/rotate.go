package ca

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// CA key rotation without downtime (issue 14): a tier gets a new
// signing key while the CA runs; the key it replaces stays trusted (trust
// endpoint, host answers, KRL, revocation stream) until its RetireAt, which
// is at least the tier's max_ttl away, so every certificate it signed
// expires before hosts stop trusting it. Agents learn both keys and the
// retirement time from the revocation stream and drop the old key by
// themselves at RetireAt. The host CA rotates the same way: its previous
// key stays in the trust endpoint's host_ca_keys (clients' known_hosts,
// playback, and the revocation stream's HostTrust.HostCA, with which
// agents verify the CA's orders) for at least the host certificate
// lifetime; agents renew onto the new key soon after they learn it.

// PreviousKey is a replaced CA key (a tier's user CA, or the host CA)
// during its overlap.
type PreviousKey struct {
	Key      ssh.PublicKey
	RetireAt time.Time
}

// KeyID names a CA key: a tier's user CA, or the host CA.
type KeyID struct {
	Tier string // the tier of a user CA; empty for the host CA
	Host bool   // the host CA
}

// UserKey names tier's user-CA key.
func UserKey(tier string) KeyID { return KeyID{Tier: tier} }

// HostKey names the host-CA key.
var HostKey = KeyID{Host: true}

// String is what messages call the key.
func (id KeyID) String() string {
	if id.Host {
		return "the host CA"
	}
	return "tier " + id.Tier + "'s user CA"
}

// Flag is the sshward-ca keys flag that selects the key (for hints in refusals).
func (id KeyID) Flag() string {
	if id.Host {
		return "--host-ca"
	}
	return "--tier " + id.Tier
}

// KeyRotator makes and retires CA keys where they are kept (the CA
// directory's keys; cmd/sshward-ca).
type KeyRotator interface {
	Rotate(ctx context.Context, key KeyID, now, retireAt time.Time) (ssh.Signer, error)
	Retire(ctx context.Context, key KeyID) error
}

// KeyRotation reports a rotation or retirement.
type KeyRotation struct {
	// Tier is the user CA's tier; empty when HostCA.
	Tier string `json:"tier,omitempty"`
	// HostCA is set for a step of the host CA.
	HostCA   bool      `json:"host_ca,omitempty"`
	Previous string    `json:"previous_fingerprint"`
	Current  string    `json:"current_fingerprint"`
	RetireAt time.Time `json:"retire_at"`
	// Keys are the trusted keys after the step (authorized_keys lines).
	Keys []string `json:"keys"`
}

// Refusals of rotation.
var (
	ErrNoKeyRotator    = errors.New("ca: this CA cannot rotate keys")
	ErrRotationPending = errors.New("ca: the previous key has not retired")
	ErrNoPreviousKey   = errors.New("ca: no previous key to retire")
	ErrOverlapTooShort = errors.New("ca: overlap shorter than the longest certificate the key signs")
	ErrOverlapRunning  = errors.New("ca: the overlap has not ended")
)

// keyState is the Authority's CA keys; rotation swaps them.
type keyState struct {
	mu   sync.RWMutex
	cur  map[KeyID]ssh.Signer
	prev map[KeyID]PreviousKey
	hub  revocationHub // wakes revocation streams when trust changes
}

func (k *keyState) init(cur map[string]ssh.Signer, prev map[string]PreviousKey, host ssh.Signer, hostPrev PreviousKey) {
	k.cur, k.prev = map[KeyID]ssh.Signer{HostKey: host}, map[KeyID]PreviousKey{}
	for t, s := range cur {
		k.cur[UserKey(t)] = s
	}
	for t, p := range prev {
		if p.Key != nil {
			k.prev[UserKey(t)] = p
		}
	}
	if hostPrev.Key != nil {
		k.prev[HostKey] = hostPrev
	}
}

// signer is the key that signs now.
func (a *Authority) signer(id KeyID) ssh.Signer {
	a.keys.mu.RLock()
	defer a.keys.mu.RUnlock()
	return a.keys.cur[id]
}

// userCA is the signer of tier's certificates.
func (a *Authority) userCA(tier string) ssh.Signer { return a.signer(UserKey(tier)) }

// hostCA is the signer of host certificates (and terminate orders).
func (a *Authority) hostCA() ssh.Signer { return a.signer(HostKey) }

// previousKey is id's replaced key while it is still trusted at now.
func (a *Authority) previousKey(id KeyID, now time.Time) (PreviousKey, bool) {
	a.keys.mu.RLock()
	defer a.keys.mu.RUnlock()
	p, ok := a.keys.prev[id]
	if !ok || !now.Before(p.RetireAt) {
		return PreviousKey{}, false
	}
	return p, true
}

// previousUserCA is tier's replaced key while it is still trusted at now.
func (a *Authority) previousUserCA(tier string, now time.Time) (PreviousKey, bool) {
	return a.previousKey(UserKey(tier), now)
}

// trusted lists id's keys trusted now: the signing key first, then the
// previous one during its overlap.
func (a *Authority) trusted(id KeyID) []ssh.PublicKey {
	s := a.signer(id)
	if s == nil {
		return nil
	}
	out := []ssh.PublicKey{s.PublicKey()}
	if p, ok := a.previousKey(id, a.cfg.Now()); ok {
		out = append(out, p.Key)
	}
	return out
}

// TrustedUserCAs lists the keys hosts accept for tier at now: the signing
// key first, then the previous one during its overlap.
func (a *Authority) TrustedUserCAs(tier string) []ssh.PublicKey { return a.trusted(UserKey(tier)) }

// HostCAKeys returns the host CA keys trusted now (hostauth verification,
// clients' known_hosts): the signing key, then the previous one during a
// rotation's overlap.
func (a *Authority) HostCAKeys() []ssh.PublicKey { return a.trusted(HostKey) }

// TrustChanged returns a channel closed at the next rotation or retirement.
func (a *Authority) TrustChanged() <-chan struct{} { return a.keys.hub.changed() }

// HostTrust is what a host of tier trusts now (sent on its revocation
// stream): its user-CA keys, and the host-CA keys orders are signed with.
func (a *Authority) HostTrust(tier string) *api.HostTrust {
	return &api.HostTrust{UserCA: a.hostUserCAs(tier), UserCALimits: a.hostUserCALimits(tier), HostCA: a.hostCATrust()}
}

// hostCATrust lists the host-CA keys trusted now, the signing key first,
// the previous one during its overlap with its retirement time.
func (a *Authority) hostCATrust() []api.HostCAKey {
	s := a.hostCA()
	if s == nil {
		return nil
	}
	out := []api.HostCAKey{{Key: authorizedKey(s.PublicKey())}}
	if p, ok := a.previousKey(HostKey, a.cfg.Now()); ok {
		out = append(out, api.HostCAKey{Key: authorizedKey(p.Key), NotAfter: p.RetireAt.UTC()})
	}
	return out
}

// hostCertTTL is the lifetime of host certificates.
func (a *Authority) hostCertTTL() time.Duration {
	if ttl := a.cfg.Policy.HostCertTTL; ttl > 0 {
		return ttl
	}
	return DefaultHostCertTTL
}

// RotateUserCA gives tier a new signing key; the current one stays trusted
// for overlap, which must cover the tier's max_ttl.
func (a *Authority) RotateUserCA(ctx context.Context, tier string, overlap time.Duration, actor string) (*KeyRotation, error) {
	pt, ok := a.cfg.Policy.Tier(tier)
	if !ok {
		return nil, refuse(api.CodeUnknownTier, http.StatusNotFound, nil, "unknown tier %q", tier)
	}
	return a.rotateKey(ctx, UserKey(tier), overlap, pt.MaxTTL, "tier "+tier+"'s max_ttl", actor)
}

// RotateHostCA gives the host CA a new signing key: host certificates are
// signed by it from now on (agents renew onto it once the revocation
// stream brings it, spread over a few minutes); the
// current key stays trusted (trust endpoint, `sshward ssh-config`,
// playback) for overlap, which must cover the host certificate lifetime.
func (a *Authority) RotateHostCA(ctx context.Context, overlap time.Duration, actor string) (*KeyRotation, error) {
	return a.rotateKey(ctx, HostKey, overlap, a.hostCertTTL(), "the host certificate lifetime", actor)
}

func (a *Authority) rotateKey(ctx context.Context, id KeyID, overlap, minOverlap time.Duration, minWhat, actor string) (*KeyRotation, error) {
	if a.cfg.Keys == nil {
		return nil, ErrNoKeyRotator
	}
	if err := a.SyncKeys(ctx); err != nil {
		return nil, err
	}
	if overlap < minOverlap {
		return nil, refuse(api.CodeBadRequest, http.StatusBadRequest, ErrOverlapTooShort,
			"the overlap %s is shorter than %s %s: certificates of the old key would be refused before they expire; pass --overlap %s or more", overlap, minWhat, minOverlap, minOverlap)
	}
	now := a.cfg.Now()
	if p, ok := a.previousKey(id, now); ok {
		return nil, refuse(api.CodeBadRequest, http.StatusConflict, ErrRotationPending,
			"%s's previous key %s is trusted until %s: retire it first (sshward-ca keys retire %s)", id, ssh.FingerprintSHA256(p.Key), p.RetireAt.UTC().Format(time.RFC3339), id.Flag())
	}
	a.keys.mu.Lock()
	defer a.keys.mu.Unlock()
	old := a.keys.cur[id]
	retireAt := now.Add(overlap)
	signer, err := a.cfg.Keys.Rotate(ctx, id, now, retireAt)
	if err != nil {
		return nil, fmt.Errorf("ca: rotate %s: %w", id, err)
	}
	a.keys.cur[id] = signer
	a.keys.prev[id] = PreviousKey{Key: old.PublicKey(), RetireAt: retireAt}
	res := &KeyRotation{Tier: id.Tier, HostCA: id.Host, Previous: ssh.FingerprintSHA256(old.PublicKey()), Current: ssh.FingerprintSHA256(signer.PublicKey()),
		RetireAt: retireAt.UTC(), Keys: []string{authorizedKey(signer.PublicKey()), authorizedKey(old.PublicKey())}}
	err = a.RecordKeyStep(ctx, "key.rotate", actor, "", res)
	a.keys.hub.publish()
	a.cfg.Logger.InfoContext(ctx, "rotated CA key", "key", id.String(), "previous", res.Previous, "current", res.Current, "retire_at", res.RetireAt)
	if err != nil {
		return res, fmt.Errorf("ca: rotate %s: the key is rotated but the audit record failed: %w", id, err)
	}
	return res, nil
}

// RetireUserCA stops trusting tier's previous key. Before the overlap
// ends it refuses unless force: certificates of the old key still valid
// are then refused by every host.
func (a *Authority) RetireUserCA(ctx context.Context, tier string, force bool, actor string) (*KeyRotation, error) {
	if _, ok := a.cfg.Policy.Tier(tier); !ok {
		return nil, refuse(api.CodeUnknownTier, http.StatusNotFound, nil, "unknown tier %q", tier)
	}
	return a.retireKey(ctx, UserKey(tier), force, actor)
}

// RetireHostCA stops trusting the host CA's previous key. Before the
// overlap ends it refuses unless force: clients then refuse hosts whose
// certificate the old key signed.
func (a *Authority) RetireHostCA(ctx context.Context, force bool, actor string) (*KeyRotation, error) {
	return a.retireKey(ctx, HostKey, force, actor)
}

func (a *Authority) retireKey(ctx context.Context, id KeyID, force bool, actor string) (*KeyRotation, error) {
	if a.cfg.Keys == nil {
		return nil, ErrNoKeyRotator
	}
	if err := a.SyncKeys(ctx); err != nil {
		return nil, err
	}
	a.keys.mu.Lock()
	defer a.keys.mu.Unlock()
	p, ok := a.keys.prev[id]
	if !ok {
		return nil, refuse(api.CodeNotFound, http.StatusNotFound, ErrNoPreviousKey, "%s has no previous key to retire", id)
	}
	now := a.cfg.Now()
	if now.Before(p.RetireAt) && !force {
		return nil, refuse(api.CodeBadRequest, http.StatusConflict, ErrOverlapRunning,
			"certificates of %s's previous key may be valid until %s: wait, or pass --force to refuse them now", id, p.RetireAt.UTC().Format(time.RFC3339))
	}
	if err := a.cfg.Keys.Retire(ctx, id); err != nil {
		return nil, fmt.Errorf("ca: retire %s: %w", id, err)
	}
	delete(a.keys.prev, id)
	cur := a.keys.cur[id]
	res := &KeyRotation{Tier: id.Tier, HostCA: id.Host, Previous: ssh.FingerprintSHA256(p.Key), Current: ssh.FingerprintSHA256(cur.PublicKey()),
		RetireAt: p.RetireAt.UTC(), Keys: []string{authorizedKey(cur.PublicKey())}}
	how := "end of overlap"
	if now.Before(p.RetireAt) {
		how = "forced"
	}
	err := a.RecordKeyStep(ctx, "key.retire", actor, how, res)
	a.keys.hub.publish()
	a.cfg.Logger.InfoContext(ctx, "retired CA key", "key", id.String(), "previous", res.Previous, "current", res.Current, "how", how)
	if err != nil {
		return res, fmt.Errorf("ca: retire %s: the key is retired but the audit record failed: %w", id, err)
	}
	return res, nil
}

// RunKeyRetirement retires previous keys whose overlap ended, checking
// every interval (default 10s) on the injected clock, until ctx ends.
// Hosts stop trusting them at RetireAt by themselves; this removes the
// files and writes the key.retire audit record.
func (a *Authority) RunKeyRetirement(ctx context.Context, interval time.Duration) error {
	if a.cfg.Keys == nil {
		return nil
	}
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		now := a.cfg.Now()
		a.keys.mu.RLock()
		var due []KeyID
		for id, p := range a.keys.prev {
			if !now.Before(p.RetireAt) {
				due = append(due, id)
			}
		}
		a.keys.mu.RUnlock()
		for _, id := range due {
			if _, err := a.retireKey(ctx, id, false, "ca"); err != nil && !errors.Is(err, ErrNoPreviousKey) {
				a.cfg.Logger.ErrorContext(ctx, "ca: automatic key retirement failed", "key", id.String(), "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RecordKeyStep appends the audit record of a rotation step (typ
// "key.rotate" or "key.retire") with both fingerprints; sshward-ca keys
// uses it offline, the Authority while serving.
func (a *Admin) RecordKeyStep(ctx context.Context, typ, actor, reason string, r *KeyRotation) error {
	return a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		subject := r.Tier
		if r.HostCA {
			subject = "host-ca"
		}
		return a.appendAudit(tx, store.AuditEvent{Type: typ, Actor: actor, Tier: r.Tier, Subject: subject, Outcome: "ok", Reason: reason,
			Details: map[string]string{"previous_fingerprint": r.Previous, "current_fingerprint": r.Current, "retire_at": r.RetireAt.Format(time.RFC3339)}})
	})
}
