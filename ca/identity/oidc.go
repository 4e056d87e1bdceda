package identity

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// OIDC defaults.
var (
	DefaultOIDCScopes = []string{oidc.ScopeOpenID, "profile", "email", "groups"}
	// DefaultMFAAMR are the RFC 8176 amr values that mean a second factor
	// (plus "totp", which some providers send instead of "otp").
	DefaultMFAAMR = []string{"otp", "mfa", "hwk", "swk", "sms", "totp"}
)

const (
	defaultUserClaim   = "preferred_username"
	defaultGroupsClaim = "groups"
	// clockLeeway is how far in the future nbf and iat may lie, for clock
	// skew between the provider and the CA (go-oidc uses the same 5 min).
	clockLeeway = 5 * time.Minute
)

// OIDCConfig configures an OIDCVerifier. Only Issuer and ClientID are
// required; zero values of the other fields mean the documented defaults.
type OIDCConfig struct {
	Issuer   string // issuer URL, exactly as in the provider's discovery document
	ClientID string // the client the CLI logs in as; tokens must be issued to it

	// Scopes the CLI should ask for; default openid profile email groups.
	// The verifier does not use them: they are here so the CA can tell
	// clients what to request.
	Scopes []string
	// UserClaim names the claim that holds the user name; default
	// preferred_username. When it is absent or empty, the email claim is used
	// (unless email_verified is false), then sub. Make sure users cannot
	// edit the claim you choose at the provider.
	UserClaim string
	// GroupsClaim names the claim that lists groups, a string or an array of
	// strings; default groups. Dots are part of the name, not a path.
	GroupsClaim string
	// MFAAMR lists amr values (RFC 8176) that mean the login used a second
	// factor; default DefaultMFAAMR.
	MFAAMR []string
	// MFAACR lists acr values that mean the same; default none.
	MFAACR []string

	HTTPClient *http.Client     // for discovery and keys; default http.DefaultClient
	Now        func() time.Time // default time.Now
}

// Check reports the first missing or invalid field.
func (c OIDCConfig) Check() error {
	switch {
	case c.Issuer == "":
		return errors.New("identity: oidc config: Issuer is required")
	case !strings.HasPrefix(c.Issuer, "https://") && !strings.HasPrefix(c.Issuer, "http://"):
		return fmt.Errorf("identity: oidc config: Issuer %q is not an http(s) URL", c.Issuer)
	case c.ClientID == "":
		return errors.New("identity: oidc config: ClientID is required")
	}
	return nil
}

// withDefaults returns a copy of c with defaults filled in; slices are
// copied so the caller may reuse theirs.
func (c OIDCConfig) withDefaults() OIDCConfig {
	c.Scopes = slices.Clone(orDefault(c.Scopes, DefaultOIDCScopes))
	c.MFAAMR = slices.Clone(orDefault(c.MFAAMR, DefaultMFAAMR))
	c.MFAACR = slices.Clone(c.MFAACR)
	if c.UserClaim == "" {
		c.UserClaim = defaultUserClaim
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = defaultGroupsClaim
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func orDefault(s, def []string) []string {
	if len(s) == 0 {
		return def
	}
	return s
}

// OIDCIdentity is what a verified ID token says about the user.
type OIDCIdentity struct {
	User    string   // from UserClaim, else email, else sub
	Subject string   // sub: stable at this issuer, unlike User
	Email   string   // email claim, may be empty
	Groups  []string // from GroupsClaim, may be empty
	MFA     bool     // amr or acr names a second factor
	AMR     []string // amr claim as sent, for the audit log
	ACR     string   // acr claim as sent
	Expiry  time.Time
}

// OIDCVerifier checks ID tokens issued by one provider to one client. It is
// safe for concurrent use.
type OIDCVerifier struct {
	cfg  OIDCConfig
	algs []string // signing algorithms accepted, from discovery
	keys *keySet
}

// asymmetricAlgs are the algorithms an ID token may be signed with. HMAC is
// left out on purpose: with a public client the "secret" would be public,
// and "none" is never acceptable.
var asymmetricAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA,
}

// NewOIDCVerifier fetches the provider's discovery document
// (OpenID Connect Discovery 1.0 §4) and returns a verifier for its ID tokens.
// The issuer in the document must equal cfg.Issuer.
func NewOIDCVerifier(ctx context.Context, cfg OIDCConfig) (*OIDCVerifier, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, cfg.HTTPClient), cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("identity: discover oidc issuer %q: %w", cfg.Issuer, err)
	}
	var meta struct {
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, fmt.Errorf("identity: discover oidc issuer %q: %w", cfg.Issuer, err)
	}
	if meta.JWKSURI == "" {
		return nil, fmt.Errorf("identity: discover oidc issuer %q: no jwks_uri", cfg.Issuer)
	}
	var algs []string
	for _, a := range meta.Algs {
		if slices.Contains(asymmetricAlgs, a) {
			algs = append(algs, a)
		}
	}
	if len(algs) == 0 {
		// OpenID Connect Core §15.1: RS256 is the one every provider supports.
		algs = []string{oidc.RS256}
	}
	return &OIDCVerifier{
		cfg:  cfg,
		algs: algs,
		keys: newKeySet(meta.JWKSURI, cfg.HTTPClient, cfg.Now),
	}, nil
}

// Config returns the configuration in use, defaults filled in.
func (v *OIDCVerifier) Config() OIDCConfig {
	c := v.cfg
	c.Scopes = slices.Clone(c.Scopes)
	c.MFAAMR = slices.Clone(c.MFAAMR)
	c.MFAACR = slices.Clone(c.MFAACR)
	return c
}

// Verify checks rawIDToken (OpenID Connect Core §3.1.3.7) and returns who it
// names. Checks run in this order, so the error says what is wrong with a
// genuine token only after its signature holds:
//
//   - compact JWS, signed with an algorithm the issuer announces (ErrMalformedToken, ErrBadSignature)
//   - signature by a key in the issuer's JWKS (ErrBadSignature, ErrKeysUnavailable)
//   - iss is the issuer (ErrWrongIssuer)
//   - exp is after Now (*TokenExpiredError); nbf and iat not in the future (ErrNotYetValid)
//   - aud contains the client ID, and azp, if present, is the client ID (*AudienceError)
//
// Verify does not check a nonce: the client that ran the login does that.
func (v *OIDCVerifier) Verify(ctx context.Context, rawIDToken string) (*OIDCIdentity, error) {
	id, err := v.verify(ctx, rawIDToken)
	if err != nil {
		return nil, fmt.Errorf("identity: verify id token: %w", err)
	}
	return id, nil
}

func (v *OIDCVerifier) verify(ctx context.Context, raw string) (*OIDCIdentity, error) {
	alg, err := headerAlg(raw)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(v.algs, alg) {
		return nil, fmt.Errorf("%w: algorithm %q not accepted (issuer announces %s)", ErrBadSignature, alg, strings.Join(v.algs, ", "))
	}
	jws, err := jose.ParseSignedCompact(raw, joseAlgs(v.algs))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedToken, err)
	}
	key, err := v.keys.verifyingKey(ctx, jws)
	if err != nil {
		return nil, err
	}
	// go-oidc parses the claims; it checks the signature again, against the
	// one key found above, and leaves the claim checks to us so that each
	// failure gets its own typed error.
	tok, err := oidc.NewVerifier(v.cfg.Issuer, &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{key}}, &oidc.Config{
		SupportedSigningAlgs: v.algs,
		SkipClientIDCheck:    true,
		SkipExpiryCheck:      true,
		SkipIssuerCheck:      true,
	}).Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedToken, err)
	}
	var c tokenClaims
	if err := tok.Claims(&c.raw); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformedToken, err)
	}
	if tok.Issuer != v.cfg.Issuer {
		return nil, fmt.Errorf("%w: iss %q, want %q", ErrWrongIssuer, tok.Issuer, v.cfg.Issuer)
	}
	now := v.cfg.Now()
	if !now.Before(tok.Expiry) {
		return nil, &TokenExpiredError{Expiry: tok.Expiry}
	}
	for _, name := range []string{"nbf", "iat"} {
		if t, ok := c.time(name); ok && t.After(now.Add(clockLeeway)) {
			return nil, fmt.Errorf("%w: %s is %s", ErrNotYetValid, name, t.UTC().Format(time.RFC3339))
		}
	}
	if !slices.Contains(tok.Audience, v.cfg.ClientID) {
		return nil, &AudienceError{Want: v.cfg.ClientID, Got: tok.Audience}
	}
	if azp, _ := c.string("azp"); azp != "" && azp != v.cfg.ClientID {
		return nil, &AudienceError{Want: v.cfg.ClientID, Got: tok.Audience, AZP: azp}
	}
	return v.identity(tok, c)
}

func (v *OIDCVerifier) identity(tok *oidc.IDToken, c tokenClaims) (*OIDCIdentity, error) {
	id := &OIDCIdentity{Subject: tok.Subject, Expiry: tok.Expiry}
	id.Email, _ = c.string("email")
	id.ACR, _ = c.string("acr")
	amr, err := c.strings("amr")
	if err != nil {
		return nil, err
	}
	id.AMR = amr
	if id.Groups, err = c.strings(v.cfg.GroupsClaim); err != nil {
		return nil, err
	}
	id.User, _ = c.string(v.cfg.UserClaim)
	if verified, ok := c.raw["email_verified"].(bool); id.User == "" && id.Email != "" && (!ok || verified) {
		id.User = id.Email
	}
	if id.User == "" {
		id.User = id.Subject
	}
	if id.User == "" {
		return nil, ErrNoUser
	}
	id.MFA = slices.ContainsFunc(id.AMR, func(a string) bool { return slices.Contains(v.cfg.MFAAMR, a) }) ||
		(id.ACR != "" && slices.Contains(v.cfg.MFAACR, id.ACR))
	return id, nil
}

// headerAlg returns the alg of a compact JWS (RFC 7515 §7.1) without
// trusting anything else in it.
func headerAlg(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("%w: want 3 dot-separated parts, got %d", ErrMalformedToken, len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", fmt.Errorf("%w: header: %v", ErrMalformedToken, err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(b, &h); err != nil || h.Alg == "" {
		return "", fmt.Errorf("%w: header has no alg", ErrMalformedToken)
	}
	return h.Alg, nil
}

func joseAlgs(algs []string) []jose.SignatureAlgorithm {
	out := make([]jose.SignatureAlgorithm, len(algs))
	for i, a := range algs {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out
}

// tokenClaims reads claims whose type varies between providers.
type tokenClaims struct {
	raw map[string]any
}

func (c tokenClaims) string(name string) (string, bool) {
	s, ok := c.raw[name].(string)
	return s, ok
}

// strings reads a claim that is a string or an array of strings; absent or
// null is empty. Any other type is an error rather than no groups, so a
// provider misconfiguration does not silently drop privileges or MFA.
func (c tokenClaims) strings(name string) ([]string, error) {
	return stringsClaim(name, c.raw[name])
}

func stringsClaim(name string, v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		if v == "" {
			return nil, nil
		}
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: claim %q: want string or array of strings, found an element of type %T", ErrMalformedToken, name, e)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: claim %q: want string or array of strings, got %T", ErrMalformedToken, name, v)
	}
}

// time reads a NumericDate claim (RFC 7519 §2).
func (c tokenClaims) time(name string) (time.Time, bool) {
	f, ok := c.raw[name].(float64)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}
