package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// WorkloadVerifier verifies workload tokens against issuers whose keys it
// finds by OpenID Connect discovery: the issuer's
// /.well-known/openid-configuration names jwks_uri, whose keys it caches and
// fetches again when a token names a key it does not hold (at most every
// keysRefetchAfter, so made-up key ids do not become a flood of fetches).
// Discovery runs at the first token of an issuer, not at start-up, so a CI
// platform that is down does not keep the CA from starting. It is safe for
// concurrent use.
type WorkloadVerifier struct {
	client *http.Client
	now    func() time.Time

	mu     sync.Mutex
	issuer map[string]*discovered
}

type discovered struct {
	mu       sync.Mutex // held across discovery, so concurrent first tokens discover once
	keys     *keySet    // nil until discovery succeeded
	failedAt time.Time  // last failed discovery, for backoff
	failure  error
}

// NewWorkloadVerifier returns a verifier that fetches with client (nil:
// http.DefaultClient) and reads time from now (nil: time.Now).
func NewWorkloadVerifier(client *http.Client, now func() time.Time) *WorkloadVerifier {
	if client == nil {
		client = http.DefaultClient
	}
	if now == nil {
		now = time.Now
	}
	return &WorkloadVerifier{client: client, now: now, issuer: map[string]*discovered{}}
}

// Verify checks raw like VerifyWorkload, with the signing key taken from
// the token issuer's discovered JWKS (issuers' Keys are ignored). Errors
// wrap ErrWorkloadToken, ErrWorkloadNoRule or ErrKeysUnavailable (the
// issuer's discovery or keys could not be fetched: not the token's fault).
func (v *WorkloadVerifier) Verify(ctx context.Context, raw, tier string, issuers []WorkloadIssuer) (Workload, error) {
	now := v.now()
	raw = strings.TrimSpace(raw)
	tok, err := jwt.ParseSigned(raw, workloadAlgs)
	if err != nil {
		return VerifyWorkload(raw, tier, nil, now) // says why it is no JWT
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return VerifyWorkload(raw, tier, nil, now)
	}
	var iss *WorkloadIssuer
	for i := range issuers {
		if issuers[i].Issuer == unverified.Issuer {
			iss = &issuers[i]
		}
	}
	if iss == nil {
		return VerifyWorkload(raw, tier, nil, now) // says the issuer is not trusted
	}
	ks, err := v.keys(ctx, iss.Issuer)
	if err != nil {
		return Workload{}, err
	}
	jws, err := jose.ParseSigned(raw, workloadAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return Workload{}, fmt.Errorf("%w: not a JWT with exactly one signature", ErrWorkloadToken)
	}
	key, err := ks.verifyingKey(ctx, jws)
	if err != nil {
		if errors.Is(err, ErrKeysUnavailable) {
			return Workload{}, err
		}
		return Workload{}, fmt.Errorf("%w: signature does not verify with a key of issuer %q", ErrWorkloadToken, iss.Issuer)
	}
	one := *iss
	one.Keys = jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key, KeyID: jws.Signatures[0].Header.KeyID}}}
	return VerifyWorkload(raw, tier, []WorkloadIssuer{one}, now)
}

// keys returns the key set of issuer, discovering it on first use.
func (v *WorkloadVerifier) keys(ctx context.Context, issuer string) (*keySet, error) {
	v.mu.Lock()
	d := v.issuer[issuer]
	if d == nil {
		d = &discovered{}
		v.issuer[issuer] = d
	}
	v.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.keys != nil {
		return d.keys, nil
	}
	if !d.failedAt.IsZero() && v.now().Sub(d.failedAt) < keysRefetchAfter {
		return nil, d.failure
	}
	uri, err := v.discover(ctx, issuer)
	if err != nil {
		d.failedAt, d.failure = v.now(), err
		return nil, err
	}
	d.keys = newKeySet(uri, v.client, v.now)
	return d.keys, nil
}

// discover reads jwks_uri from the issuer's discovery document (OpenID
// Connect Discovery 1.0 §4), whose issuer must be the one configured.
func (v *WorkloadVerifier) discover(ctx context.Context, issuer string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, keysFetchTimeout)
		defer cancel()
	}
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("%w: discovery of %q: %v", ErrKeysUnavailable, issuer, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: discovery of %q: %v", ErrKeysUnavailable, issuer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%w: GET %s: %s", ErrKeysUnavailable, u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes))
	if err != nil {
		return "", fmt.Errorf("%w: read %s: %v", ErrKeysUnavailable, u, err)
	}
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &meta); err != nil {
		return "", fmt.Errorf("%w: parse %s: %v", ErrKeysUnavailable, u, err)
	}
	if meta.Issuer != issuer {
		return "", fmt.Errorf("%w: discovery of %q names issuer %q", ErrKeysUnavailable, issuer, trimClaim(meta.Issuer))
	}
	if !strings.HasPrefix(meta.JWKSURI, "https://") && !strings.HasPrefix(meta.JWKSURI, "http://") {
		return "", fmt.Errorf("%w: discovery of %q has no http(s) jwks_uri", ErrKeysUnavailable, issuer)
	}
	return meta.JWKSURI, nil
}
