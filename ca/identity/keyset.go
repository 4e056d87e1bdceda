package identity

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// keysFetchTimeout bounds one JWKS fetch when the caller's context has
	// no deadline.
	keysFetchTimeout = 10 * time.Second
	// keysRefetchAfter is the least time between two fetches triggered by a
	// token no cached key verifies: providers rotate keys rarely, and a flood
	// of tokens with made-up key IDs must not become a flood of fetches.
	keysRefetchAfter = 10 * time.Second
	maxJWKSBytes     = 1 << 20
)

// keySet caches a provider's JWKS (RFC 7517) and fetches it again when a
// token names a key it does not hold. go-oidc has a remote key set too, but
// its errors do not tell "bad signature" from "provider unreachable", and
// the CA must report those differently.
type keySet struct {
	url    string
	client *http.Client
	now    func() time.Time

	fetchMu sync.Mutex // held across a fetch, so concurrent misses fetch once

	mu        sync.Mutex // guards the fields below
	keys      []jose.JSONWebKey
	fetchedAt time.Time // zero: never fetched successfully
}

func newKeySet(url string, client *http.Client, now func() time.Time) *keySet {
	return &keySet{url: url, client: client, now: now}
}

// verifyingKey returns the public key that verifies jws, fetching the JWKS
// when no cached key does.
func (k *keySet) verifyingKey(ctx context.Context, jws *jose.JSONWebSignature) (crypto.PublicKey, error) {
	if key := verifyWith(k.cached(), jws); key != nil {
		return key, nil
	}
	keys, err := k.refresh(ctx)
	if err != nil {
		return nil, err
	}
	if key := verifyWith(keys, jws); key != nil {
		return key, nil
	}
	kid := jws.Signatures[0].Header.KeyID
	return nil, fmt.Errorf("%w: no key of the issuer verifies it (kid %q)", ErrBadSignature, kid)
}

func (k *keySet) cached() []jose.JSONWebKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys
}

// refresh fetches the JWKS unless another caller did so within
// keysRefetchAfter, and returns the keys to try.
func (k *keySet) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	k.mu.Lock()
	keys, fetchedAt := k.keys, k.fetchedAt
	k.mu.Unlock()
	if !fetchedAt.IsZero() && k.now().Sub(fetchedAt) < keysRefetchAfter {
		return keys, nil
	}
	keys, err := k.fetch(ctx)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.keys, k.fetchedAt = keys, k.now()
	k.mu.Unlock()
	return keys, nil
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, keysFetchTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: GET %s: %s", ErrKeysUnavailable, k.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrKeysUnavailable, k.url, err)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("%w: parse %s: %v", ErrKeysUnavailable, k.url, err)
	}
	keys := make([]jose.JSONWebKey, 0, len(set.Keys))
	for _, b := range set.Keys {
		// One key of a type we do not know must not hide the others.
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(b); err != nil {
			continue
		}
		// Only asymmetric signing keys; a private key published by mistake
		// is reduced to its public half.
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		if pub := key.Public(); pub.Valid() && pub.IsPublic() {
			keys = append(keys, pub)
		}
	}
	return keys, nil
}

// verifyWith returns the first key that verifies jws: keys with the token's
// kid (any key when the token has none) whose alg, if set, matches.
func verifyWith(keys []jose.JSONWebKey, jws *jose.JSONWebSignature) crypto.PublicKey {
	h := jws.Signatures[0].Header
	for _, key := range keys {
		if h.KeyID != "" && key.KeyID != h.KeyID {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != h.Algorithm {
			continue
		}
		if _, err := jws.Verify(key.Key); err == nil {
			return key.Key
		}
	}
	return nil
}
