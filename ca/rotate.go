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

// User-CA key rotation without downtime (issue 14): a tier gets a new
// signing key while the CA runs; the key it replaces stays trusted (trust
// endpoint, host answers, KRL, revocation stream) until its RetireAt, which
// is at least the tier's max_ttl away, so every certificate it signed
// expires before hosts stop trusting it. Agents learn both keys and the
// retirement time from the revocation stream and drop the old key by
// themselves at RetireAt.

// PreviousKey is a tier's replaced user-CA key during its overlap.
type PreviousKey struct {
	Key      ssh.PublicKey
	RetireAt time.Time
}

// KeyRotator makes and retires CA keys where they are kept (the CA
// directory's keys; cmd/sshward-ca). name is the tier, or HostCAName.
type KeyRotator interface {
	Rotate(ctx context.Context, tier string, now, retireAt time.Time) (ssh.Signer, error)
	Retire(ctx context.Context, tier string) error
}

// KeyRotation reports a rotation or retirement.
type KeyRotation struct {
	Tier     string    `json:"tier"`
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
	ErrOverlapTooShort = errors.New("ca: overlap shorter than the tier's max_ttl")
	ErrOverlapRunning  = errors.New("ca: the overlap has not ended")
)

// keyState is the Authority's user-CA keys; rotation swaps them.
type keyState struct {
	mu   sync.RWMutex
	cur  map[string]ssh.Signer
	prev map[string]PreviousKey
	hub  revocationHub // wakes revocation streams when trust changes
}

func (k *keyState) init(cur map[string]ssh.Signer, prev map[string]PreviousKey) {
	k.cur, k.prev = map[string]ssh.Signer{}, map[string]PreviousKey{}
	for t, s := range cur {
		k.cur[t] = s
	}
	for t, p := range prev {
		if p.Key != nil {
			k.prev[t] = p
		}
	}
}

// userCA is the signer of tier's certificates.
func (a *Authority) userCA(tier string) ssh.Signer {
	a.keys.mu.RLock()
	defer a.keys.mu.RUnlock()
	return a.keys.cur[tier]
}

// previousUserCA is tier's replaced key while it is still trusted at now.
func (a *Authority) previousUserCA(tier string, now time.Time) (PreviousKey, bool) {
	a.keys.mu.RLock()
	defer a.keys.mu.RUnlock()
	p, ok := a.keys.prev[tier]
	if !ok || !now.Before(p.RetireAt) {
		return PreviousKey{}, false
	}
	return p, true
}

// TrustedUserCAs lists the keys hosts accept for tier at now: the signing
// key first, then the previous one during its overlap.
func (a *Authority) TrustedUserCAs(tier string) []ssh.PublicKey {
	s := a.userCA(tier)
	if s == nil {
		return nil
	}
	out := []ssh.PublicKey{s.PublicKey()}
	if p, ok := a.previousUserCA(tier, a.cfg.Now()); ok {
		out = append(out, p.Key)
	}
	return out
}

// TrustChanged returns a channel closed at the next rotation or retirement.
func (a *Authority) TrustChanged() <-chan struct{} { return a.keys.hub.changed() }

// HostTrust is what a host of tier trusts now (sent on its revocation stream).
func (a *Authority) HostTrust(tier string) *api.HostTrust {
	return &api.HostTrust{UserCA: a.hostUserCAs(tier), UserCALimits: a.hostUserCALimits(tier)}
}

// RotateUserCA gives tier a new signing key; the current one stays trusted
// for overlap, which must cover the tier's max_ttl.
func (a *Authority) RotateUserCA(ctx context.Context, tier string, overlap time.Duration, actor string) (*KeyRotation, error) {
	pt, ok := a.cfg.Policy.Tier(tier)
	if !ok {
		return nil, refuse(api.CodeUnknownTier, http.StatusNotFound, nil, "unknown tier %q", tier)
	}
	if a.cfg.Keys == nil {
		return nil, ErrNoKeyRotator
	}
	if overlap < pt.MaxTTL {
		return nil, refuse(api.CodeBadRequest, http.StatusBadRequest, ErrOverlapTooShort,
			"the overlap %s is shorter than tier %s's max_ttl %s: certificates of the old key would be refused before they expire; pass --overlap %s or more", overlap, tier, pt.MaxTTL, pt.MaxTTL)
	}
	now := a.cfg.Now()
	if p, ok := a.previousUserCA(tier, now); ok {
		return nil, refuse(api.CodeBadRequest, http.StatusConflict, ErrRotationPending,
			"tier %s's previous key %s is trusted until %s: retire it first (sshward-ca keys retire --tier %s)", tier, ssh.FingerprintSHA256(p.Key), p.RetireAt.UTC().Format(time.RFC3339), tier)
	}
	a.keys.mu.Lock()
	defer a.keys.mu.Unlock()
	old := a.keys.cur[tier]
	retireAt := now.Add(overlap)
	signer, err := a.cfg.Keys.Rotate(ctx, tier, now, retireAt)
	if err != nil {
		return nil, fmt.Errorf("ca: rotate %s user CA: %w", tier, err)
	}
	a.keys.cur[tier] = signer
	a.keys.prev[tier] = PreviousKey{Key: old.PublicKey(), RetireAt: retireAt}
	res := &KeyRotation{Tier: tier, Previous: ssh.FingerprintSHA256(old.PublicKey()), Current: ssh.FingerprintSHA256(signer.PublicKey()),
		RetireAt: retireAt.UTC(), Keys: []string{authorizedKey(signer.PublicKey()), authorizedKey(old.PublicKey())}}
	err = a.RecordKeyStep(ctx, "key.rotate", actor, "", res)
	a.keys.hub.publish()
	a.cfg.Logger.InfoContext(ctx, "rotated user CA key", "tier", tier, "previous", res.Previous, "current", res.Current, "retire_at", res.RetireAt)
	if err != nil {
		return res, fmt.Errorf("ca: rotate %s user CA: the key is rotated but the audit record failed: %w", tier, err)
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
	if a.cfg.Keys == nil {
		return nil, ErrNoKeyRotator
	}
	a.keys.mu.Lock()
	defer a.keys.mu.Unlock()
	p, ok := a.keys.prev[tier]
	if !ok {
		return nil, refuse(api.CodeNotFound, http.StatusNotFound, ErrNoPreviousKey, "tier %s has no previous key to retire", tier)
	}
	now := a.cfg.Now()
	if now.Before(p.RetireAt) && !force {
		return nil, refuse(api.CodeBadRequest, http.StatusConflict, ErrOverlapRunning,
			"certificates of tier %s's previous key may be valid until %s: wait, or pass --force to refuse them now", tier, p.RetireAt.UTC().Format(time.RFC3339))
	}
	if err := a.cfg.Keys.Retire(ctx, tier); err != nil {
		return nil, fmt.Errorf("ca: retire %s user CA: %w", tier, err)
	}
	delete(a.keys.prev, tier)
	cur := a.keys.cur[tier]
	res := &KeyRotation{Tier: tier, Previous: ssh.FingerprintSHA256(p.Key), Current: ssh.FingerprintSHA256(cur.PublicKey()),
		RetireAt: p.RetireAt.UTC(), Keys: []string{authorizedKey(cur.PublicKey())}}
	how := "end of overlap"
	if now.Before(p.RetireAt) {
		how = "forced"
	}
	err := a.RecordKeyStep(ctx, "key.retire", actor, how, res)
	a.keys.hub.publish()
	a.cfg.Logger.InfoContext(ctx, "retired user CA key", "tier", tier, "previous", res.Previous, "current", res.Current, "how", how)
	if err != nil {
		return res, fmt.Errorf("ca: retire %s user CA: the key is retired but the audit record failed: %w", tier, err)
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
		var due []string
		for tier, p := range a.keys.prev {
			if !now.Before(p.RetireAt) {
				due = append(due, tier)
			}
		}
		a.keys.mu.RUnlock()
		for _, tier := range due {
			if _, err := a.RetireUserCA(ctx, tier, false, "ca"); err != nil && !errors.Is(err, ErrNoPreviousKey) {
				a.cfg.Logger.ErrorContext(ctx, "ca: automatic key retirement failed", "tier", tier, "err", err)
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
		return a.appendAudit(tx, store.AuditEvent{Type: typ, Actor: actor, Tier: r.Tier, Subject: r.Tier, Outcome: "ok", Reason: reason,
			Details: map[string]string{"previous_fingerprint": r.Previous, "current_fingerprint": r.Current, "retire_at": r.RetireAt.Format(time.RFC3339)}})
	})
}
