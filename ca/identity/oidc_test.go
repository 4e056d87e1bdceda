package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// fakeIssuer is an in-process provider: a discovery document and a JWKS
// over httptest, and go-jose to sign tokens. Unit tests use it for claims
// and failures a real provider will not produce on demand; the real one
// (glewlwyd) is in oidc_glewlwyd_test.go.
type fakeIssuer struct {
	srv  *httptest.Server
	algs []string // announced in discovery

	mu          sync.Mutex // guards the fields below
	published   []jose.JSONWebKey
	jwksStatus  int // 0: 200
	jwksFetches int
}

type signingKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

func newFakeIssuer(t *testing.T, algs ...string) *fakeIssuer {
	t.Helper()
	f := &fakeIssuer{algs: algs}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                f.srv.URL,
			"authorization_endpoint":                f.srv.URL + "/auth",
			"token_endpoint":                        f.srv.URL + "/token",
			"jwks_uri":                              f.srv.URL + "/jwks",
			"id_token_signing_alg_values_supported": f.algs,
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.jwksFetches++
		if f.jwksStatus != 0 {
			w.WriteHeader(f.jwksStatus)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: f.published})
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// newKey makes a key; publish puts its public half in the JWKS.
func newKey(t *testing.T, kid string, alg jose.SignatureAlgorithm) signingKey {
	t.Helper()
	var k crypto.Signer
	var err error
	switch alg {
	case jose.ES256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.RS256:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		t.Fatalf("newKey: no %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: alg, key: k}
}

func (f *fakeIssuer) publish(keys ...signingKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		f.published = append(f.published, jose.JSONWebKey{Key: k.key.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
	}
}

func (f *fakeIssuer) fetches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jwksFetches
}

func sign(t *testing.T, k signingKey, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.kid != "" {
		opts = opts.WithHeader("kid", k.kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// unsigned builds a token by hand, for headers go-jose will not sign.
func unsigned(header, claims map[string]any, sig string) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." + sig
}

var testNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func baseClaims(issuer string) map[string]any {
	return map[string]any{
		"iss": issuer, "sub": "u-123", "aud": "sshward",
		"iat": testNow.Add(-time.Minute).Unix(), "exp": testNow.Add(time.Hour).Unix(),
		"preferred_username": "alice", "email": "alice@example.com",
		"groups": []string{"ops", "dev"}, "amr": []string{"pwd"},
	}
}

func TestOIDCVerify(t *testing.T) {
	f := newFakeIssuer(t, "ES256", "RS256", "HS256", "none")
	es := newKey(t, "es-1", jose.ES256)
	rs := newKey(t, "rs-1", jose.RS256)
	unpublished := newKey(t, "es-1", jose.ES256) // same kid, other key
	f.publish(es, rs)
	iss := f.srv.URL

	with := func(changes map[string]any) map[string]any {
		c := baseClaims(iss)
		maps.Copy(c, changes)
		for k, v := range changes {
			if v == nil {
				delete(c, k)
			}
		}
		return c
	}
	tests := []struct {
		name    string
		cfg     func(*OIDCConfig)
		token   func() string
		want    *OIDCIdentity // checked when wantErr is nil
		wantErr any           // error sentinel, or pointer to a typed error for errors.As
	}{
		{
			name:  "ES256, defaults",
			token: func() string { return sign(t, es, baseClaims(iss)) },
			want:  &OIDCIdentity{User: "alice", Subject: "u-123", Email: "alice@example.com", Groups: []string{"ops", "dev"}, AMR: []string{"pwd"}},
		},
		{
			name:  "RS256 key found by kid",
			token: func() string { return sign(t, rs, baseClaims(iss)) },
			want:  &OIDCIdentity{User: "alice", Subject: "u-123", Email: "alice@example.com", Groups: []string{"ops", "dev"}, AMR: []string{"pwd"}},
		},
		{
			name: "groups as one string, amr otp means MFA",
			token: func() string {
				return sign(t, es, with(map[string]any{"groups": "ops", "amr": []string{"pwd", "otp"}}))
			},
			want: &OIDCIdentity{User: "alice", Subject: "u-123", Email: "alice@example.com", Groups: []string{"ops"}, MFA: true, AMR: []string{"pwd", "otp"}},
		},
		{
			name:  "hardware key amr means MFA",
			token: func() string { return sign(t, es, with(map[string]any{"amr": []string{"hwk"}})) },
			want:  &OIDCIdentity{User: "alice", Subject: "u-123", Email: "alice@example.com", Groups: []string{"ops", "dev"}, MFA: true, AMR: []string{"hwk"}},
		},
		{
			name:  "acr counts only when configured",
			cfg:   func(c *OIDCConfig) { c.MFAACR = []string{"urn:example:mfa"} },
			token: func() string { return sign(t, es, with(map[string]any{"acr": "urn:example:mfa", "amr": nil})) },
			want:  &OIDCIdentity{User: "alice", Subject: "u-123", Email: "alice@example.com", Groups: []string{"ops", "dev"}, MFA: true, ACR: "urn:example:mfa"},
		},
		{
			name:  "acr not configured is no MFA",
			token: func() string { return sign(t, es, with(map[string]any{"acr": "urn:example:mfa", "amr": nil})) },
			want:  &OIDCIdentity{User: "alice", Subject: "u-123", Email: "alice@example.com", Groups: []string{"ops", "dev"}, ACR: "urn:example:mfa"},
		},
		{
			name:  "custom MFA amr list replaces the default",
			cfg:   func(c *OIDCConfig) { c.MFAAMR = []string{"hwk"} },
			token: func() string { return sign(t, es, with(map[string]any{"amr": []string{"otp"}})) },
			want:  &OIDCIdentity{User: "alice", Subject: "u-123", Email: "alice@example.com", Groups: []string{"ops", "dev"}, AMR: []string{"otp"}},
		},
		{
			name: "custom user and groups claims",
			cfg:  func(c *OIDCConfig) { c.UserClaim, c.GroupsClaim = "upn", "https://example.com/roles" },
			token: func() string {
				return sign(t, es, with(map[string]any{"upn": "a.lice", "https://example.com/roles": []string{"admin"}}))
			},
			want: &OIDCIdentity{User: "a.lice", Subject: "u-123", Email: "alice@example.com", Groups: []string{"admin"}, AMR: []string{"pwd"}},
		},
		{
			name:  "no preferred_username: email",
			token: func() string { return sign(t, es, with(map[string]any{"preferred_username": nil, "groups": nil})) },
			want:  &OIDCIdentity{User: "alice@example.com", Subject: "u-123", Email: "alice@example.com", AMR: []string{"pwd"}},
		},
		{
			name: "unverified email: sub",
			token: func() string {
				return sign(t, es, with(map[string]any{"preferred_username": nil, "email_verified": false, "groups": nil}))
			},
			want: &OIDCIdentity{User: "u-123", Subject: "u-123", Email: "alice@example.com", AMR: []string{"pwd"}},
		},
		{
			name: "aud array with azp",
			token: func() string {
				return sign(t, es, with(map[string]any{"aud": []string{"sshward", "api"}, "azp": "sshward"}))
			},
			want: &OIDCIdentity{User: "alice", Subject: "u-123", Email: "alice@example.com", Groups: []string{"ops", "dev"}, AMR: []string{"pwd"}},
		},
		{
			name:    "expired",
			token:   func() string { return sign(t, es, with(map[string]any{"exp": testNow.Add(-time.Second).Unix()})) },
			wantErr: &TokenExpiredError{Expiry: testNow.Add(-time.Second)},
		},
		{
			name:    "exp exactly now is expired",
			token:   func() string { return sign(t, es, with(map[string]any{"exp": testNow.Unix()})) },
			wantErr: &TokenExpiredError{Expiry: testNow},
		},
		{
			name:    "no exp",
			token:   func() string { return sign(t, es, with(map[string]any{"exp": nil})) },
			wantErr: &TokenExpiredError{},
		},
		{
			name:    "nbf in the future beyond leeway",
			token:   func() string { return sign(t, es, with(map[string]any{"nbf": testNow.Add(10 * time.Minute).Unix()})) },
			wantErr: ErrNotYetValid,
		},
		{
			name:    "other audience",
			token:   func() string { return sign(t, es, with(map[string]any{"aud": "other-client"})) },
			wantErr: &AudienceError{Want: "sshward", Got: []string{"other-client"}},
		},
		{
			name:    "azp names another client",
			token:   func() string { return sign(t, es, with(map[string]any{"aud": []string{"sshward", "x"}, "azp": "x"})) },
			wantErr: &AudienceError{Want: "sshward", Got: []string{"sshward", "x"}, AZP: "x"},
		},
		{
			name:    "other issuer",
			token:   func() string { return sign(t, es, with(map[string]any{"iss": "https://evil.example"})) },
			wantErr: ErrWrongIssuer,
		},
		{
			name:    "unpublished key with a published kid",
			token:   func() string { return sign(t, unpublished, baseClaims(iss)) },
			wantErr: ErrBadSignature,
		},
		{
			name: "payload swapped under a valid signature",
			token: func() string {
				parts := strings.Split(sign(t, es, baseClaims(iss)), ".")
				forged, _ := json.Marshal(with(map[string]any{"preferred_username": "root"}))
				return parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]
			},
			wantErr: ErrBadSignature,
		},
		{
			name:    "alg none",
			token:   func() string { return unsigned(map[string]any{"alg": "none"}, baseClaims(iss), "") },
			wantErr: ErrBadSignature,
		},
		{
			name: "HS256 keyed with the public key (alg confusion)",
			token: func() string {
				return unsigned(map[string]any{"alg": "HS256", "kid": "es-1"}, baseClaims(iss), "c2lnbmF0dXJl")
			},
			wantErr: ErrBadSignature,
		},
		{
			name:    "groups claim of the wrong type",
			token:   func() string { return sign(t, es, with(map[string]any{"groups": 42})) },
			wantErr: ErrMalformedToken,
		},
		{
			name:    "groups array with a number",
			token:   func() string { return sign(t, es, with(map[string]any{"groups": []any{"ops", 1}})) },
			wantErr: ErrMalformedToken,
		},
		{name: "not a JWT", token: func() string { return "hello" }, wantErr: ErrMalformedToken},
		{name: "empty", token: func() string { return "" }, wantErr: ErrMalformedToken},
		{name: "header not base64", token: func() string { return "!!.e30.sig" }, wantErr: ErrMalformedToken},
		{
			name: "no user at all",
			token: func() string {
				return sign(t, es, with(map[string]any{"preferred_username": nil, "email": nil, "sub": nil}))
			},
			wantErr: ErrNoUser,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := OIDCConfig{Issuer: iss, ClientID: "sshward", Now: func() time.Time { return testNow }}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			v, err := NewOIDCVerifier(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(t.Context(), tt.token())
			if tt.wantErr != nil {
				checkErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			tt.want.Expiry = testNow.Add(time.Hour)
			if !equalIdentity(id, tt.want) {
				t.Errorf("identity\n got %+v\nwant %+v", id, tt.want)
			}
		})
	}
}

func checkErr(t *testing.T, err error, want any) {
	t.Helper()
	if err == nil {
		t.Fatalf("Verify succeeded, want %v", want)
	}
	switch w := want.(type) {
	case *TokenExpiredError:
		var got *TokenExpiredError
		if !errors.As(err, &got) || !got.Expiry.Equal(w.Expiry) && !w.Expiry.IsZero() {
			t.Errorf("err = %v, want expired at %s", err, w.Expiry)
		}
	case *AudienceError:
		var got *AudienceError
		if !errors.As(err, &got) || got.Want != w.Want || !slices.Equal(got.Got, w.Got) || got.AZP != w.AZP {
			t.Errorf("err = %#v, want %#v", err, w)
		}
	case error:
		if !errors.Is(err, w) {
			t.Errorf("err = %v, want %v", err, w)
		}
	}
}

func equalIdentity(a, b *OIDCIdentity) bool {
	return a.User == b.User && a.Subject == b.Subject && a.Email == b.Email && slices.Equal(a.Groups, b.Groups) &&
		a.MFA == b.MFA && slices.Equal(a.AMR, b.AMR) && a.ACR == b.ACR && a.Expiry.Equal(b.Expiry)
}

// TestOIDCKeyRotation: a token signed by a key published after the first
// fetch triggers one more fetch, then verifies.
func TestOIDCKeyRotation(t *testing.T) {
	f := newFakeIssuer(t, "ES256")
	old, rotated := newKey(t, "k1", jose.ES256), newKey(t, "k2", jose.ES256)
	f.publish(old)
	now := testNow
	v, err := NewOIDCVerifier(t.Context(), OIDCConfig{Issuer: f.srv.URL, ClientID: "sshward", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), sign(t, old, baseClaims(f.srv.URL))); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), sign(t, old, baseClaims(f.srv.URL))); err != nil || f.fetches() != 1 {
		t.Fatalf("second token: err %v after %d fetches, want cached keys (1 fetch)", err, f.fetches())
	}
	f.publish(rotated)
	// Within keysRefetchAfter of the last fetch an unknown kid does not refetch.
	if _, err := v.Verify(t.Context(), sign(t, rotated, baseClaims(f.srv.URL))); !errors.Is(err, ErrBadSignature) || f.fetches() != 1 {
		t.Fatalf("rotated key right away: err %v, %d fetches; want ErrBadSignature and no refetch", err, f.fetches())
	}
	now = now.Add(keysRefetchAfter)
	if _, err := v.Verify(t.Context(), sign(t, rotated, baseClaims(f.srv.URL))); err != nil || f.fetches() != 2 {
		t.Fatalf("rotated key later: err %v, %d fetches; want success after one refetch", err, f.fetches())
	}
}

func TestOIDCKeysUnavailable(t *testing.T) {
	f := newFakeIssuer(t, "ES256")
	k := newKey(t, "k1", jose.ES256)
	f.publish(k)
	f.jwksStatus = http.StatusServiceUnavailable
	v, err := NewOIDCVerifier(t.Context(), OIDCConfig{Issuer: f.srv.URL, ClientID: "sshward", Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), sign(t, k, baseClaims(f.srv.URL)))
	if !errors.Is(err, ErrKeysUnavailable) || errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrKeysUnavailable (not a bad signature)", err)
	}
}

func TestNewOIDCVerifier(t *testing.T) {
	f := newFakeIssuer(t) // announces no algorithms: RS256 only
	rs, es := newKey(t, "r", jose.RS256), newKey(t, "e", jose.ES256)
	f.publish(rs, es)
	tests := []struct {
		name    string
		cfg     OIDCConfig
		wantErr string
	}{
		{"no issuer", OIDCConfig{ClientID: "c"}, "Issuer is required"},
		{"no client", OIDCConfig{Issuer: f.srv.URL}, "ClientID is required"},
		{"not a URL", OIDCConfig{Issuer: "idp.example", ClientID: "c"}, "not an http(s) URL"},
		{"issuer differs from discovery", OIDCConfig{Issuer: f.srv.URL + "/", ClientID: "c"}, "discover"},
		{"unreachable", OIDCConfig{Issuer: "http://127.0.0.1:1", ClientID: "c"}, "discover"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewOIDCVerifier(t.Context(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to say %q", err, tt.wantErr)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		v, err := NewOIDCVerifier(t.Context(), OIDCConfig{Issuer: f.srv.URL, ClientID: "sshward", Now: func() time.Time { return testNow }})
		if err != nil {
			t.Fatal(err)
		}
		c := v.Config()
		if !slices.Equal(c.Scopes, DefaultOIDCScopes) || !slices.Equal(c.MFAAMR, DefaultMFAAMR) || c.UserClaim != "preferred_username" || c.GroupsClaim != "groups" {
			t.Errorf("defaults not filled: %+v", c)
		}
		if _, err := v.Verify(t.Context(), sign(t, rs, baseClaims(f.srv.URL))); err != nil {
			t.Errorf("RS256 token: %v", err)
		}
		if _, err := v.Verify(t.Context(), sign(t, es, baseClaims(f.srv.URL))); !errors.Is(err, ErrBadSignature) {
			t.Errorf("ES256 token from an issuer that announces none: err %v, want ErrBadSignature", err)
		}
	})
}

func TestOIDCVerifyContext(t *testing.T) {
	f := newFakeIssuer(t, "ES256")
	k := newKey(t, "k1", jose.ES256)
	f.publish(k)
	v, err := NewOIDCVerifier(t.Context(), OIDCConfig{Issuer: f.srv.URL, ClientID: "sshward", Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := v.Verify(ctx, sign(t, k, baseClaims(f.srv.URL))); !errors.Is(err, ErrKeysUnavailable) {
		t.Errorf("cancelled context, keys not cached: err %v, want ErrKeysUnavailable", err)
	}
}
