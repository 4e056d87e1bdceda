package identity

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Password errors.
var (
	// ErrUnsupportedHash is returned for a stored hash that is neither argon2id
	// in PHC format nor bcrypt.
	ErrUnsupportedHash = errors.New("identity: unsupported password hash format")
	// ErrMalformedHash is returned for a stored hash that names a known
	// algorithm but cannot be parsed, or whose parameters are out of bounds.
	ErrMalformedHash = errors.New("identity: malformed password hash")
)

// TOTP errors.
var (
	// ErrBadOTP is returned when a code matches none of the accepted steps.
	ErrBadOTP = errors.New("identity: wrong one-time code")
	// ErrOTPReplayed is returned when a code is right but its step was already
	// used: RFC 6238 §5.2 says a verifier must not accept the same code twice.
	ErrOTPReplayed = errors.New("identity: one-time code already used")
)

// OIDC errors. Verify returns these (or the typed errors below) wrapped, so
// callers test with errors.Is and errors.As.
var (
	// ErrMalformedToken is returned for input that is not a compact JWS.
	ErrMalformedToken = errors.New("identity: malformed id token")
	// ErrBadSignature is returned when no key of the issuer verifies the
	// token, or when it is signed with an algorithm the issuer does not
	// announce (including "none" and HMAC).
	ErrBadSignature = errors.New("identity: id token signature is not valid")
	// ErrKeysUnavailable is returned when the issuer's keys cannot be fetched:
	// the token may be fine, the provider is not reachable.
	ErrKeysUnavailable = errors.New("identity: issuer keys unavailable")
	// ErrWrongIssuer is returned when the iss claim is not the configured issuer.
	ErrWrongIssuer = errors.New("identity: id token from another issuer")
	// ErrNotYetValid is returned when nbf or iat lie too far in the future.
	ErrNotYetValid = errors.New("identity: id token not yet valid")
	// ErrNoUser is returned when none of the user claims (configured claim,
	// email, sub) carries a value.
	ErrNoUser = errors.New("identity: id token names no user")
)

// TokenExpiredError is returned by Verify for an ID token whose exp lies in
// the past.
type TokenExpiredError struct {
	Expiry time.Time // exp claim of the token
}

func (e *TokenExpiredError) Error() string {
	return fmt.Sprintf("identity: id token expired at %s", e.Expiry.UTC().Format(time.RFC3339))
}

// AudienceError is returned by Verify for an ID token issued to another
// client (aud does not contain the client ID, or azp names another client).
type AudienceError struct {
	Want string   // the configured client ID
	Got  []string // aud claim of the token
	AZP  string   // azp claim, when it is what failed
}

func (e *AudienceError) Error() string {
	if e.AZP != "" {
		return fmt.Sprintf("identity: id token authorized party %q is not client %q", e.AZP, e.Want)
	}
	return fmt.Sprintf("identity: id token audience [%s] does not include client %q", strings.Join(e.Got, " "), e.Want)
}

// Workload token errors (issue 12 §1). The message names the failed check,
// never the token.
var (
	// ErrWorkloadToken is returned for a workload token that fails a check:
	// issuer, audience, algorithm, signature, age, or a claim rule.
	ErrWorkloadToken = errors.New("identity: workload token refused")
	// ErrWorkloadNoRule is returned when a valid token matches no rule of
	// the issuer for the requested tier (default deny).
	ErrWorkloadNoRule = errors.New("identity: no workload rule admits this token")
)
