package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/identity"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
)

// ErrWorkloadReplayed is returned when a workload token's jti was already
// exchanged for a certificate (issue 12 §1). Kept here, with the workload
// exchange, so the parallel edits to errors.go stay apart.
var ErrWorkloadReplayed = errors.New("ca: workload token already used: fetch a fresh token from the CI platform")

// WorkloadTokenID is the used-token key of a workload token: the SHA-256 of
// its issuer and jti, so a jti is once per issuer, whatever the token bytes.
func WorkloadTokenID(w identity.Workload) string {
	return store.TokenID("workload\x00" + w.Issuer + "\x00" + w.JTI)
}

// UseWorkloadToken records in db that w's jti was used, until the token
// expires; a second use is ErrWorkloadReplayed. One store transaction, so of
// racing exchanges of one token exactly one wins, and a restart remembers.
func UseWorkloadToken(ctx context.Context, db *store.DB, w identity.Workload) error {
	err := db.Update(ctx, func(tx *store.Tx) error { return tx.UseToken(WorkloadTokenID(w), w.Expiry) })
	if errors.Is(err, store.ErrExists) {
		return ErrWorkloadReplayed
	}
	if err != nil {
		return fmt.Errorf("ca: record workload token use: %w", err)
	}
	return nil
}

// workloadLockout slows down an address that keeps sending refused workload
// tokens (forged, replayed, for the wrong audience) without locking a busy
// CI runner out for long: the CA's only unauthenticated issuing endpoint
// must not be a free oracle.
var workloadLockout = identity.Lockout{Threshold: 20, Base: 10 * time.Second, Max: 5 * time.Minute}

// workloadThrottleName is the throttle's "user": all workload refusals from
// an address count together.
const workloadThrottleName = "\x00workload"

func (a *Authority) initWorkloads() {
	a.workloads = identity.NewWorkloadVerifier(a.cfg.WorkloadHTTPClient, a.cfg.Now)
	a.workloadThrottle = newLoginThrottle(workloadLockout)
}

// workloadIssuers turns the policy's workload issuers into what identity
// verifies against (keys come from discovery).
func workloadIssuers(p *policy.Policy) []identity.WorkloadIssuer {
	out := make([]identity.WorkloadIssuer, 0, len(p.WorkloadIssuers))
	for _, iss := range p.WorkloadIssuers {
		w := identity.WorkloadIssuer{Issuer: iss.Issuer, Audience: iss.Audience, MaxAge: iss.MaxAge}
		for _, r := range iss.Rules {
			w.Rules = append(w.Rules, identity.WorkloadRule{Tier: r.Tier, Principals: r.Principals, Claims: r.Claims})
		}
		out = append(out, w)
	}
	return out
}

// IssueWorkloadCert exchanges a CI platform's OIDC token for a short
// certificate (issue 12 §1): the token must come from a trusted issuer
// (signature by a key of its discovered JWKS, iss and aud pinned, unexpired,
// young enough), match a rule of the policy for the tier, and not have been
// used before (its jti, once per issuer, in the store: across CA replicas
// and restarts). The certificate's key id and the recordings of its
// sessions name the workload ("ci:org/deploy@refs/heads/main run=42").
// Every refusal says why, never echoes the token, and is audited.
func (a *Authority) IssueWorkloadCert(ctx context.Context, req api.WorkloadCertRequest, clientAddr string) (*api.CertResponse, error) {
	ev := store.AuditEvent{Type: "cert.issue", Tier: req.Tier, ClientAddr: clientAddr, Details: map[string]string{"method": "workload"}}
	resp, err := a.issueWorkloadCert(ctx, req, clientAddr, &ev)
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) && (r.Status == http.StatusUnauthorized || r.Status == http.StatusForbidden) {
			a.workloadThrottle.fail(workloadThrottleName, clientAddr, a.cfg.Now())
		}
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return resp, nil
}

func (a *Authority) issueWorkloadCert(ctx context.Context, req api.WorkloadCertRequest, clientAddr string, ev *store.AuditEvent) (*api.CertResponse, error) {
	now := a.cfg.Now()
	if a.workloadThrottle.locked(workloadThrottleName, clientAddr, now) {
		return nil, refuse(api.CodeLocked, http.StatusTooManyRequests, nil, "too many refused workload tokens from this address: wait a few minutes")
	}
	if err := req.Check(); err != nil {
		return nil, badRequest(err, "workload certificate request: %v", err)
	}
	pub, err := parseClientKey(req.PublicKey)
	if err != nil {
		return nil, err
	}
	pol := a.cfg.Policy
	if len(pol.WorkloadIssuers) == 0 {
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil, "this CA trusts no workload issuer: add workload_issuers to the policy")
	}
	w, err := a.workloads.Verify(ctx, req.Token, req.Tier, workloadIssuers(pol))
	switch {
	case errors.Is(err, identity.ErrKeysUnavailable):
		return nil, refuse(api.CodeInternal, http.StatusServiceUnavailable, err, "the CA cannot fetch the token issuer's signing keys now: try again shortly")
	case errors.Is(err, identity.ErrWorkloadNoRule):
		return nil, refuse(api.CodeForbidden, http.StatusForbidden, err, "%s", trimPkg(err))
	case err != nil:
		return nil, refuse(api.CodeTokenInvalid, http.StatusUnauthorized, err, "%s", trimPkg(err))
	}
	name := w.Name()
	ev.Actor, ev.Subject, ev.Tier = name, name, w.Tier
	ev.Details["issuer"], ev.Details["sub"], ev.Details["jti"] = w.Issuer, w.Subject, w.JTI
	if err := UseWorkloadToken(ctx, a.cfg.Store, w); err != nil {
		if errors.Is(err, ErrWorkloadReplayed) {
			return nil, refuse(api.CodeTokenInvalid, http.StatusUnauthorized, err, "%s", trimPkg(err))
		}
		return nil, err
	}
	var certTTL time.Duration
	for _, iss := range pol.WorkloadIssuers {
		if iss.Issuer == w.Issuer {
			certTTL = iss.CertTTL
		}
	}
	grant, err := pol.GrantWorkload(policy.WorkloadRequest{Tier: w.Tier, Principals: w.Principals, TTL: certTTL, ClientAddr: clientAddr, Now: now})
	if err != nil {
		return nil, policyRefusal(err)
	}
	signer := a.userCA(grant.Tier)
	for attempt := 0; ; attempt++ {
		serial, err := a.serial(ctx)
		if err != nil {
			return nil, err
		}
		keyID := fmt.Sprintf("%s tier=%s req=- serial=%d", name, grant.Tier, serial)
		line, cert, rec, err := a.signUserCert(signer, pub, grant, serial, keyID, name, clientAddr, now)
		if err != nil {
			return nil, err
		}
		ev.Serial, ev.KeyID, ev.Outcome = serial, cert.KeyId, "ok"
		ev.Details["principals"] = joinComma(grant.Principals)
		ev.Details["valid_before"] = rec.ValidBefore.Format(time.RFC3339)
		ev.Details["key"] = rec.PublicKeyFP
		evCopy := *ev
		err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
			if err := tx.PutCert(rec); err != nil {
				return err
			}
			return a.appendAudit(tx, evCopy)
		})
		if errors.Is(err, store.ErrDuplicateSerial) && attempt < 3 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ca: record workload cert %d: %w", serial, err)
		}
		a.workloadThrottle.succeed(workloadThrottleName, clientAddr)
		a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "issued workload certificate",
			slog.String("workload", name), slog.String("tier", grant.Tier), slog.Uint64("serial", serial),
			slog.String("key_id", cert.KeyId), slog.String("client", clientAddr))
		return &api.CertResponse{
			Certificate: string(line),
			Serial:      serial, KeyID: cert.KeyId, Tier: grant.Tier, Principals: grant.Principals,
			ValidAfter: rec.ValidAfter, ValidBefore: rec.ValidBefore,
		}, nil
	}
}
