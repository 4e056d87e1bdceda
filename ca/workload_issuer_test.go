package ca_test

import (
	"context"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/identity/workloadtest"
	"github.com/sshward/sshward/ca/store"
)

const workloadAud = "https://ca.sshward.test"

func workloadPolicy(issuer string) []byte {
	return []byte(`tiers:
  production:
    ttl: 15m
    approvals: 1
    approvers: [leads]
    principals: {sre: ["{{user}}"]}
  staging:
    ttl: 1h
    principals: {eng: ["{{user}}"]}
workload_issuers:
  - issuer: ` + issuer + `
    audience: ` + workloadAud + `
    max_age: 5m
    cert_ttl: 2m
    rules:
      - tier: production
        principals: [deploy]
        claims: {repository: org/deploy, ref: refs/heads/main, environment: production}
`)
}

// TestWorkloadCertIssuer exchanges tokens of a real issuer process on
// loopback (ciissuer: discovery, JWKS, ES256; see its doc for why it is not
// glewlwyd) for certificates over the CA's HTTPS API, and tries every
// refusal a pipeline or an attacker with a token can meet: each must be
// refused with its reason, without echoing the token, and audited.
func TestWorkloadCertIssuer(t *testing.T) {
	is := workloadtest.Start(t)
	// The CA's clock runs ahead on demand: it fetches an issuer's JWKS again
	// for an unknown kid at most every 10s (so a forger's made-up kids are
	// not a flood of fetches), and the rotation row needs that time past.
	var ahead atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	c := catest.New(t, catest.Options{Policy: workloadPolicy(is.URL), Now: now})
	cl := c.Client(t, "")
	ctx := context.Background()
	pub := string(ssh.MarshalAuthorizedKey(catest.NewSigner(t).PublicKey()))
	good := func() url.Values {
		return workloadtest.Claims(workloadAud, "org/deploy", "refs/heads/main", "production", "4711")
	}
	exchange := func(tok, tier string) (*api.CertResponse, error) {
		return cl.WorkloadCert(ctx, api.WorkloadCertRequest{Token: tok, Tier: tier, PublicKey: pub})
	}

	tok := is.Token(t, good())
	resp, err := exchange(tok, "production")
	if err != nil {
		t.Fatalf("a main-branch deploy token was refused: %v", err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	cert := pk.(*ssh.Certificate)
	if !strings.HasPrefix(cert.KeyId, "ci:org/deploy@refs/heads/main run=4711 tier=production ") ||
		strings.Join(cert.ValidPrincipals, ",") != "deploy" || api.KeyIDIdentity(cert.KeyId) != "ci:org/deploy@refs/heads/main run=4711" {
		t.Fatalf("certificate key id %q principals %v", cert.KeyId, cert.ValidPrincipals)
	}
	if life := cert.ValidBefore - cert.ValidAfter; life > uint64((2*60)+60) {
		t.Fatalf("certificate lives %ds, want the 2m cert_ttl (+1m backdate)", life)
	}

	rows := []struct {
		name, tier, say, code string
		tok                   func() string
	}{
		{"replayed: same jti twice", "production", "already used", api.CodeTokenInvalid, func() string { return tok }},
		{"wrong audience", "production", `audience is not "` + workloadAud + `"`, api.CodeTokenInvalid, func() string {
			q := good()
			q.Set("aud", "https://other-service.test")
			return is.Token(t, q)
		}},
		{"wrong issuer", "production", "is not trusted", api.CodeTokenInvalid, func() string {
			q := good()
			q.Set("iss", "https://token.actions.githubusercontent.com")
			return is.Token(t, q)
		}},
		{"expired", "production", "token expired", api.CodeTokenInvalid, func() string {
			q := good()
			q.Set("iat", "-20m")
			q.Set("exp", "-10m")
			return is.Token(t, q)
		}},
		{"too old (max_age)", "production", "older than the 5m0s allowed", api.CodeTokenInvalid, func() string {
			q := good()
			q.Set("iat", "-8m")
			q.Set("exp", "10m")
			return is.Token(t, q)
		}},
		{"branch not allowed", "production", `claim ref="refs/heads/feature-x" does not match "refs/heads/main"`, api.CodeForbidden, func() string {
			q := good()
			q.Set("ref", "refs/heads/feature-x")
			return is.Token(t, q)
		}},
		{"other repository", "production", `claim repository="org/fork" does not match "org/deploy"`, api.CodeForbidden, func() string {
			q := good()
			q.Set("repository", "org/fork")
			return is.Token(t, q)
		}},
		{"no rule for the tier (default deny)", "staging", `has no rule for tier "staging"`, api.CodeForbidden, func() string { return is.Token(t, good()) }},
		{"unknown kid: a forger's key", "production", "signature does not verify", api.CodeTokenInvalid, func() string {
			q := good()
			q.Set("kid", "unknown")
			return is.Token(t, q)
		}},
		{"forged signature on a real kid", "production", "signature does not verify", api.CodeTokenInvalid, func() string {
			parts := strings.Split(is.Token(t, good()), ".")
			other := strings.Split(is.Token(t, workloadtest.Claims(workloadAud, "org/deploy", "refs/heads/main", "production", "1")), ".")
			return parts[0] + "." + parts[1] + "." + other[2]
		}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			tk := r.tok()
			_, err := exchange(tk, r.tier)
			if !api.IsCode(err, r.code) || !strings.Contains(err.Error(), r.say) {
				t.Fatalf("got %v, want %s saying %q", err, r.code, r.say)
			}
			if strings.Contains(err.Error(), strings.Split(tk, ".")[2]) {
				t.Fatal("the refusal echoes the token")
			}
		})
	}

	t.Run("key rotation: an unknown kid makes the CA fetch the JWKS again", func(t *testing.T) {
		is.Rotate(t)
		// Within 10s of the forger's unknown kid the CA does not fetch again.
		if _, err := exchange(is.Token(t, good()), "production"); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
			t.Fatalf("rotated key right after a refetch: %v, want a refusal (refetch is rate-limited)", err)
		}
		ahead.Store(int64(11 * time.Second))
		if _, err := exchange(is.Token(t, good()), "production"); err != nil {
			t.Fatalf("token signed with the rotated key: %v", err)
		}
	})

	t.Run("replay through a second CA instance on the same store", func(t *testing.T) {
		tk := is.Token(t, good())
		if _, err := exchange(tk, "production"); err != nil {
			t.Fatal(err)
		}
		second, err := ca.New(ca.Config{Store: c.Store, Policy: c.Policy, UserCAs: c.UserCAs, HostCA: c.HostCA, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		_, err = second.IssueWorkloadCert(ctx, api.WorkloadCertRequest{Token: tk, Tier: "production", PublicKey: pub}, "192.0.2.9")
		if err == nil || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("second CA instance: %v, want a replay refusal", err)
		}
	})

	evs, err := c.Store.Audit(ctx, store.AuditFilter{Type: "cert.issue"})
	if err != nil {
		t.Fatal(err)
	}
	var ok, refused int
	for _, e := range evs {
		if e.Details["method"] != "workload" {
			continue
		}
		if strings.Contains(e.Reason, tok) {
			t.Fatalf("audit reason holds the token: %+v", e)
		}
		switch e.Outcome {
		case "ok":
			ok++
			if e.Actor != "ci:org/deploy@refs/heads/main run=4711" || e.Details["jti"] == "" {
				t.Fatalf("issue event: %+v", e)
			}
		case "refused":
			refused++
		}
	}
	if ok != 3 || refused != len(rows)+2 {
		t.Fatalf("audit: %d issued, %d refused; want 3 and %d", ok, refused, len(rows)+2)
	}
}
