package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sshward/sshward/ca/identity"
)

// TestVerifyWorkload tries to get a deploy certificate's identity out of CI
// tokens that must be refused: each row names the check it attacks and
// asserts the refusal text, which must never contain the token.
func TestVerifyWorkload(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	const iss, aud = "https://ci.example.test", "sshward"
	key := mustEC(t)
	rogue := mustEC(t)
	issuers := []identity.WorkloadIssuer{{
		Issuer: iss, Audience: aud, MaxAge: 5 * time.Minute,
		Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}},
		Rules: []identity.WorkloadRule{
			{Tier: "production", Principals: []string{"deploy"}, Claims: map[string]string{"repository": "org/deploy", "ref": "refs/heads/main"}},
			{Tier: "staging", Principals: []string{"ci"}, Claims: map[string]string{"repository": "org/*", "environment": "staging"}},
		},
	}}
	base := func() map[string]any {
		return map[string]any{
			"iss": iss, "aud": aud, "sub": "repo:org/deploy:ref:refs/heads/main", "jti": "j-1",
			"iat": now.Add(-time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(4 * time.Minute).Unix(),
			"repository": "org/deploy", "ref": "refs/heads/main", "environment": "staging", "run_id": "4711",
		}
	}
	sign := func(k *ecdsa.PrivateKey, kid string, c map[string]any) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", kid).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := jwt.Signed(s).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	with := func(f func(map[string]any)) string { c := base(); f(c); return sign(key, "k1", c) }
	b64 := func(v any) string { j, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(j) }
	algNone := b64(map[string]string{"alg": "none", "typ": "JWT"}) + "." + b64(base()) + "."
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	hsSigner, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub}, nil)
	hsPub, _ := jwt.Signed(hsSigner).Claims(base()).Serialize()

	rows := []struct {
		name, tier, raw, want string
		noRule                bool
	}{
		{"wrong audience", "production", with(func(c map[string]any) { c["aud"] = "other" }), `audience is not "sshward"`, false},
		{"wrong issuer", "production", with(func(c map[string]any) { c["iss"] = "https://evil.test" }), `issuer "https://evil.test" is not trusted`, false},
		{"expired", "production", with(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() }), "token expired", false},
		{"too old (iat)", "production", with(func(c map[string]any) { c["iat"] = now.Add(-time.Hour).Unix(); c["nbf"] = now.Add(-time.Hour).Unix() }), "older than the 5m0s allowed", false},
		{"not yet valid", "production", with(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() }), "not valid yet", false},
		{"no jti", "production", with(func(c map[string]any) { delete(c, "jti") }), "no jti", false},
		{"key not in JWKS", "production", sign(rogue, "k1", base()), "signature does not verify", false},
		{"key not in JWKS, unknown kid", "production", sign(rogue, "k9", base()), "signature does not verify", false},
		{"alg none", "production", algNone, "allowed algorithm", false},
		{"HS256 keyed with the public key", "production", hsPub, "allowed algorithm", false},
		{"branch not allowed", "production", with(func(c map[string]any) { c["ref"] = "refs/heads/feature" }), `claim ref="refs/heads/feature" does not match "refs/heads/main"`, true},
		{"repo not allowed by glob", "staging", with(func(c map[string]any) { c["repository"] = "other/deploy" }), `claim repository="other/deploy" does not match "org/*"`, true},
		{"claim missing", "staging", with(func(c map[string]any) { delete(c, "environment") }), "claim environment is missing", true},
		{"no rule for tier", "admin", with(func(map[string]any) {}), `no rule for tier "admin"`, true},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			w, err := identity.VerifyWorkload(r.raw, r.tier, issuers, now)
			if err == nil {
				t.Fatalf("admitted %+v", w)
			}
			want := identity.ErrWorkloadToken
			if r.noRule {
				want = identity.ErrWorkloadNoRule
			}
			if !errors.Is(err, want) || !strings.Contains(err.Error(), r.want) {
				t.Fatalf("err = %v, want %v containing %q", err, want, r.want)
			}
			if strings.Contains(err.Error(), r.raw) || strings.Contains(err.Error(), strings.Split(r.raw, ".")[1]) {
				t.Fatalf("refusal echoes the token: %v", err)
			}
			if w.Tier != "" || len(w.Principals) != 0 {
				t.Fatalf("refusal returned a grant: %+v", w)
			}
		})
	}

	t.Run("main of org/deploy gets deploy on production", func(t *testing.T) {
		w, err := identity.VerifyWorkload(sign(key, "k1", base()), "production", issuers, now)
		if err != nil {
			t.Fatal(err)
		}
		if w.Tier != "production" || len(w.Principals) != 1 || w.Principals[0] != "deploy" || w.JTI != "j-1" {
			t.Fatalf("grant = %+v", w)
		}
		if got, want := w.Name(), "ci:org/deploy@refs/heads/main run=4711"; got != want {
			t.Fatalf("Name() = %q, want %q", got, want)
		}
	})
	t.Run("glob rule on staging", func(t *testing.T) {
		w, err := identity.VerifyWorkload(with(func(c map[string]any) { c["repository"] = "org/web" }), "staging", issuers, now)
		if err != nil || w.Principals[0] != "ci" {
			t.Fatalf("w=%+v err=%v", w, err)
		}
	})
}

func mustEC(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestWorkloadNameSafe: a claim with spaces or control characters cannot
// add fields to the key id ("tier=…", "serial=…") or break a log line.
func TestWorkloadNameSafe(t *testing.T) {
	w := identity.Workload{Subject: "s", Claims: map[string]any{
		"repository": "org/deploy tier=break-glass", "ref": "refs/heads/x\nserial=1", "run_id": float64(42),
	}}
	if got, want := w.Name(), "ci:org/deploy_tier=break-glass@refs/heads/x_serial=1 run=42"; got != want {
		t.Fatalf("Name() = %q, want %q", got, want)
	}
	if got := (identity.Workload{Subject: "repo:a/b:ref:main"}).Name(); got != "ci:repo:a/b:ref:main" {
		t.Fatalf("Name() without repository = %q", got)
	}
}
