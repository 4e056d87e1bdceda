package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sshward/sshward/cmd/internal/cli"
)

// Journey 6, a pipeline (README: Pipelines). The demo plays the CI
// platform: an OpenID Connect token issuer on loopback (discovery, JWKS and
// ES256 tokens with GitHub-Actions-like claims) whose key lives only in the
// demo process. `sshward-demo ci-token` asks it for a job's token, as a CI
// job does; the CA trusts the issuer through workload_issuers, and only the
// main branch of demo/deploy gets a staging certificate. Anyone on this
// machine can ask the demo issuer for a token: it is a demo stand-in for a
// CI platform, never something to run in production.

// ciRepo and ciRef are what the demo's rule admits.
const (
	ciRepo = "demo/deploy"
	ciRef  = "refs/heads/main"
)

// ciIssuer is the demo's CI token issuer.
type ciIssuer struct {
	URL      string `json:"url"`
	Audience string `json:"audience"`
	key      jose.JSONWebKey
}

// startCIIssuer listens on loopback and serves until ctx ends.
func startCIIssuer(ctx context.Context, audience string) (*ciIssuer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("CI issuer: %w", err)
	}
	is := &ciIssuer{URL: "http://" + ln.Addr().String(), Audience: audience,
		key: jose.JSONWebKey{Key: k, KeyID: "demo-ci-1", Algorithm: "ES256", Use: "sig"}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"issuer": is.URL, "jwks_uri": is.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"ES256"},
			"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{is.key.Public()}})
	})
	mux.HandleFunc("GET /token", is.token)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	return is, nil
}

// token mints a job's token: ?ref= picks the branch (default main).
func (is *ciIssuer) token(w http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		ref = ciRef
	}
	now := time.Now()
	var b [12]byte
	rand.Read(b[:])
	run := fmt.Sprint(now.Unix() % 100000)
	claims := map[string]any{
		"iss": is.URL, "aud": is.Audience, "jti": hex.EncodeToString(b[:]), "sub": "repo:" + ciRepo + ":ref:" + ref,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"repository": ciRepo, "ref": ref, "workflow": "deploy", "run_id": run, "actor": "demo-ci",
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: is.key.Key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", is.key.KeyID))
	if err != nil {
		http.Error(w, "cannot sign", http.StatusInternalServerError)
		return
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		http.Error(w, "cannot sign", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/jwt")
	io.WriteString(w, raw+"\n")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// ciPolicy is the workload_issuers block the demo adds to its policy.
func (is *ciIssuer) policy(principal string) string {
	return fmt.Sprintf(`
# the demo's stand-in CI platform (journey 6; README: Pipelines)
workload_issuers:
  - issuer: %s
    audience: %s
    max_age: 5m
    cert_ttl: 5m
    rules:
      - tier: staging
        principals: [%s]
        claims: {repository: %s, ref: %s}
`, is.URL, is.Audience, principal, ciRepo, ciRef)
}

// cmdCIToken prints a CI job's token from the running demo's issuer.
func cmdCIToken(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-demo ci-token [--ref REF] [--dir DIR]")
	dir := fs.String("dir", "", "demo directory (default: the newest one in the temp dir)")
	ref := fs.String("ref", ciRef, "the job's branch or tag (only "+ciRef+" is admitted)")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	st, err := loadState(*dir)
	if err != nil {
		return err
	}
	if st.CI == nil {
		return errors.New("this demo has no CI issuer")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, st.CI.URL+"/token?ref="+*ref, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the demo's CI issuer does not answer (is the demo running?): %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("CI issuer: %s %v", resp.Status, err)
	}
	_, err = os.Stdout.Write(body)
	return err
}

// ciHome is the pipeline's own SSHWARD_HOME: no login, only its certificate.
func ciHome(st state) string { return filepath.Join(st.Dir, "home-ci") }
