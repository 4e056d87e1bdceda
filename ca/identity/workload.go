package identity

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"
	"unicode"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// workloadAlgs is the signature allow-list for workload tokens: asymmetric
// only, so "none" and HMAC (a public key misused as an HS secret) never verify.
var workloadAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.PS256, jose.EdDSA}

// WorkloadRule maps claims of a trusted workload token to a tier and
// principals. Every entry of Claims must match (exact, or path.Match glob
// when the pattern holds *, ? or [); a rule with no claims matches nothing.
type WorkloadRule struct {
	Tier       string
	Principals []string
	Claims     map[string]string
}

// WorkloadIssuer is one trusted CI token issuer.
type WorkloadIssuer struct {
	Issuer   string
	Audience string
	Keys     jose.JSONWebKeySet
	MaxAge   time.Duration // token age limit from iat; 0 means 10 minutes
	Leeway   time.Duration // clock skew allowed; 0 means 30 seconds
	Rules    []WorkloadRule
}

// Workload is a verified workload token and the rule that admitted it.
type Workload struct {
	Issuer     string
	Subject    string
	JTI        string
	Expiry     time.Time
	Claims     map[string]any
	Tier       string
	Principals []string
}

// Name is the workload's name for key ids, audit and recordings:
// ci:REPOSITORY@REF run=RUN_ID (falling back to the subject).
func (w Workload) Name() string {
	repo, _ := w.Claims["repository"].(string)
	ref, _ := w.Claims["ref"].(string)
	run := claimString(w.Claims["run_id"])
	name := "ci:" + w.Subject
	if repo != "" {
		name = "ci:" + repo
		if ref != "" {
			name += "@" + ref
		}
	}
	name = keyIDSafe(name)
	if run != "" {
		name += " run=" + keyIDSafe(run)
	}
	return name
}

// keyIDSafe replaces spaces and control characters with '_' and bounds the
// length, so a claim cannot forge further fields of a key id, audit line or
// recording name.
func keyIDSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return '_'
		}
		return r
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "")
	}
	return s
}

// VerifyWorkload checks raw against the trusted issuers (signature with an
// allow-listed algorithm and a key of the issuer's set, issuer, audience,
// exp/nbf/iat with leeway, age from iat, jti present) and then the issuer's
// rules for tier. Replay of jti is the caller's job (the CA store). Errors
// say which check failed and never echo the token.
func VerifyWorkload(raw string, tier string, issuers []WorkloadIssuer, now time.Time) (Workload, error) {
	tok, err := jwt.ParseSigned(strings.TrimSpace(raw), workloadAlgs)
	if err != nil {
		return Workload{}, fmt.Errorf("%w: not a signed JWT with an allowed algorithm (%s)", ErrWorkloadToken, algList())
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return Workload{}, fmt.Errorf("%w: claims are not readable", ErrWorkloadToken)
	}
	var iss *WorkloadIssuer
	for i := range issuers {
		if issuers[i].Issuer == unverified.Issuer {
			iss = &issuers[i]
		}
	}
	if iss == nil {
		return Workload{}, fmt.Errorf("%w: issuer %q is not trusted", ErrWorkloadToken, trimClaim(unverified.Issuer))
	}
	var std jwt.Claims
	all := map[string]any{}
	if err := verifyWithSet(tok, iss.Keys, &std, &all); err != nil {
		return Workload{}, fmt.Errorf("%w: signature does not verify with a key of issuer %q", ErrWorkloadToken, iss.Issuer)
	}
	leeway := iss.Leeway
	if leeway == 0 {
		leeway = 30 * time.Second
	}
	maxAge := iss.MaxAge
	if maxAge == 0 {
		maxAge = 10 * time.Minute
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: iss.Issuer, AnyAudience: jwt.Audience{iss.Audience}, Time: now}, leeway); err != nil {
		switch {
		case errors.Is(err, jwt.ErrInvalidAudience):
			return Workload{}, fmt.Errorf("%w: audience is not %q", ErrWorkloadToken, iss.Audience)
		case errors.Is(err, jwt.ErrExpired):
			return Workload{}, fmt.Errorf("%w: token expired; fetch a fresh token from the CI platform", ErrWorkloadToken)
		case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
			return Workload{}, fmt.Errorf("%w: token is not valid yet (check the clocks)", ErrWorkloadToken)
		default:
			return Workload{}, fmt.Errorf("%w: %v", ErrWorkloadToken, err)
		}
	}
	if std.Expiry == nil || std.IssuedAt == nil {
		return Workload{}, fmt.Errorf("%w: token lacks exp or iat", ErrWorkloadToken)
	}
	if now.Sub(std.IssuedAt.Time()) > maxAge+leeway {
		return Workload{}, fmt.Errorf("%w: token is older than the %s allowed", ErrWorkloadToken, maxAge)
	}
	if std.ID == "" {
		return Workload{}, fmt.Errorf("%w: token has no jti, so replay cannot be refused", ErrWorkloadToken)
	}
	w := Workload{Issuer: iss.Issuer, Subject: std.Subject, JTI: std.ID, Expiry: std.Expiry.Time(), Claims: all}
	var reasons []string
	for _, r := range iss.Rules {
		if r.Tier != tier {
			continue
		}
		if why := matchRule(r, all); why != "" {
			reasons = append(reasons, why)
			continue
		}
		w.Tier, w.Principals = r.Tier, append([]string(nil), r.Principals...)
		return w, nil
	}
	if len(reasons) == 0 {
		return Workload{}, fmt.Errorf("%w: issuer %q has no rule for tier %q", ErrWorkloadNoRule, iss.Issuer, tier)
	}
	return Workload{}, fmt.Errorf("%w for tier %q: %s", ErrWorkloadNoRule, tier, strings.Join(reasons, "; "))
}

func verifyWithSet(tok *jwt.JSONWebToken, set jose.JSONWebKeySet, dst ...any) error {
	for _, h := range tok.Headers {
		if h.KeyID != "" {
			for _, k := range set.Key(h.KeyID) {
				if k.IsPublic() && tok.Claims(k.Key, dst...) == nil {
					return nil
				}
			}
			return errors.New("no key")
		}
	}
	for _, k := range set.Keys {
		if k.IsPublic() && tok.Claims(k.Key, dst...) == nil {
			return nil
		}
	}
	return errors.New("no key")
}

// matchRule returns "" when every claim of r matches, else the first failed
// claim (sorted by name, so the reason is stable).
func matchRule(r WorkloadRule, claims map[string]any) string {
	if len(r.Claims) == 0 {
		return "rule has no claims"
	}
	names := make([]string, 0, len(r.Claims))
	for n := range r.Claims {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		want := r.Claims[n]
		got := claimString(claims[n])
		if got == "" {
			return fmt.Sprintf("claim %s is missing", n)
		}
		if !globMatch(want, got) {
			return fmt.Sprintf("claim %s=%q does not match %q", n, trimClaim(got), want)
		}
	}
	return ""
}

func globMatch(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?[") {
		return pattern == s
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

func claimString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return fmt.Sprintf("%.0f", x)
	case bool:
		return fmt.Sprint(x)
	}
	return ""
}

func trimClaim(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

func algList() string {
	s := make([]string, len(workloadAlgs))
	for i, a := range workloadAlgs {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}
