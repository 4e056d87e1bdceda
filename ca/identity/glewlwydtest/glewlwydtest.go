package glewlwydtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base32"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pquerna/otp/hotp"
)

// Where Debian's glewlwyd package (2.7.5) puts things.
const (
	binary     = "glewlwyd"
	moduleDir  = "/usr/lib/glewlwyd"
	schemaFile = "/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3"
	installMsg = "glewlwyd not installed: apt-get install glewlwyd dbconfig-sqlite3"
)

// The seeded administrator of a fresh glewlwyd database.
const (
	adminUser     = "admin"
	adminPassword = "password"
)

// Names provisioned by Start.
const (
	ClientID    = "sshward"
	PluginName  = "oidc"
	OTPScheme   = "otp"
	GroupsScope = "groups"
	// MFAScope needs the OTP scheme on top of the password: a login that
	// asks for it and did the OTP step gets "otp" in amr.
	MFAScope = "mfa"
	// LoopbackRedirectURI is registered on the client from the start; the
	// loopback redirect URIs of real logins (with a port) are added on the
	// fly by CompleteAuthCode, because glewlwyd compares redirect URIs as
	// exact strings and ignores RFC 8252 §7.3's "any port on loopback".
	LoopbackRedirectURI = "http://127.0.0.1/callback"
)

// Scopes are all the scopes Start creates; every user AddUser makes has them
// and has granted them to the client.
var Scopes = []string{"openid", "profile", "email", GroupsScope, MFAScope}

const (
	startTimeout   = 15 * time.Second // process start to first answer (slow fsyncs on a busy disk)
	requestTimeout = 10 * time.Second // one admin or user request
	stopTimeout    = 3 * time.Second  // SIGTERM to SIGKILL
	startAttempts  = 3                // another process may take the port we picked
)

// Options tune the provider; the zero value is a public client and one-hour
// tokens.
type Options struct {
	// Confidential makes the client confidential, with a random ClientSecret.
	Confidential bool
	// TokenLifetime is the access and ID token lifetime; default 1h.
	TokenLifetime time.Duration
	// Client, when set, is the client exactly as POSTed to /api/client/
	// (the README's OIDC walkthrough shows one) instead of the default
	// public client; ClientID is read from it. Its redirect URIs are then
	// fixed: CompleteAuthCode fails on any other rather than adding it.
	Client map[string]any
	// Verbose runs glewlwyd at DEBUG and logs its output even when the test
	// passes (it is logged on failure anyway).
	Verbose bool
}

// Provider is a running glewlwyd with an OIDC plugin, an OTP scheme, the
// Scopes above and one client. Its methods fail the test on error; call
// them from the test goroutine.
type Provider struct {
	BaseURL      string // http://127.0.0.1:PORT
	Issuer       string // BaseURL + "/api/oidc"
	ClientID     string
	ClientSecret string // empty for a public client

	admin *http.Client // carries the admin session cookie
	fixed bool         // Options.Client: the redirect URIs are as given

	mu        sync.Mutex        // guards the fields below
	hotp      map[string]string // user → HOTP secret (base32)
	redirects map[string]bool   // redirect URIs registered on the client
}

// Start runs glewlwyd on a free loopback port with its database and
// configuration in t.TempDir(), provisions it, and stops it when the test
// ends. It fails the test when glewlwyd is not installed.
func Start(t testing.TB, opts Options) *Provider {
	t.Helper()
	for _, f := range []string{moduleDir, schemaFile} {
		if _, err := os.Stat(f); err != nil {
			t.Fatal(installMsg)
		}
	}
	for _, b := range []string{binary, "sqlite3"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatal(installMsg)
		}
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = time.Hour
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "glewlwyd.db")
	if err := createDB(db); err != nil {
		t.Fatalf("glewlwydtest: %v", err)
	}

	var base string
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("glewlwydtest: %v", err)
		}
		base = fmt.Sprintf("http://127.0.0.1:%d", port)
		// A session cookie name of its own tells this instance from another
		// glewlwyd that got the port first (see run).
		sessionKey := "GLEWLWYDTEST_" + rand.Text()
		conf := filepath.Join(dir, "glewlwyd.conf")
		if err := os.WriteFile(conf, []byte(config(port, base, db, sessionKey, opts.Verbose)), 0o600); err != nil {
			t.Fatalf("glewlwydtest: %v", err)
		}
		err = run(t, conf, base, sessionKey, opts.Verbose)
		if err == nil {
			break
		}
		if attempt == startAttempts {
			t.Fatalf("glewlwydtest: %v", err)
		}
	}

	jar, _ := cookiejar.New(nil)
	p := &Provider{
		BaseURL:   base,
		Issuer:    base + "/api/" + PluginName,
		ClientID:  ClientID,
		admin:     &http.Client{Jar: jar, CheckRedirect: noRedirect},
		hotp:      map[string]string{},
		redirects: map[string]bool{LoopbackRedirectURI: true},
	}
	if opts.Confidential {
		p.ClientSecret = rand.Text()
	}
	if opts.Client != nil {
		id, _ := opts.Client["client_id"].(string)
		uris, _ := opts.Client["redirect_uri"].([]any)
		if id == "" {
			t.Fatalf("glewlwydtest: Options.Client has no client_id")
		}
		p.ClientID, p.fixed, p.redirects = id, true, map[string]bool{}
		for _, u := range uris {
			if u, ok := u.(string); ok {
				p.redirects[u] = true
			}
		}
	}
	p.provision(t, opts)
	return p
}

// createDB loads Debian's sqlite schema, which also seeds the admin user.
// One transaction and WAL mode (which the database keeps for glewlwyd's own
// connections) because every commit is an fsync: the schema's 780 statements
// one by one took up to 7 s here, and provisioning seconds more.
func createDB(path string) error {
	schema, err := os.ReadFile(schemaFile)
	if err != nil {
		return err
	}
	cmd := exec.Command("sqlite3", path)
	cmd.Stdin = io.MultiReader(strings.NewReader("PRAGMA journal_mode=WAL;\nBEGIN;\n"), bytes.NewReader(schema), strings.NewReader("\nCOMMIT;\n"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("create database: sqlite3: %v: %s", err, out)
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// config is glewlwyd's libconfig file. use_secure_connection must be absent
// altogether: glewlwyd 2.7.5 exits when it is present, even set to false.
func config(port int, base, db, sessionKey string, verbose bool) string {
	level := "INFO"
	if verbose {
		level = "DEBUG"
	}
	return fmt.Sprintf(`port=%d
bind_address="127.0.0.1"
external_url="%s"
login_url="login.html"
api_prefix="api"
log_mode="console"
log_level="%s"
cookie_secure=0
cookie_same_site="empty"
session_expiration=3600
session_key="%[6]s"
admin_session_authentication="cookie"
profile_session_authentication="cookie"
allow_multiple_user_per_session=false
login_api_enabled=true
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="%[4]s/user"
client_module_path="%[4]s/client"
user_auth_scheme_module_path="%[4]s/scheme"
plugin_module_path="%[4]s/plugin"
hash_algorithm="SHA512"
database =
{
  type = "sqlite3"
  path = "%[5]s"
};
`, port, base, level, moduleDir, db, sessionKey)
}

// run starts glewlwyd and waits until it answers HTTP as itself: glewlwyd
// reports it started before it binds, and when the port is taken another
// glewlwyd (a parallel test's) answers in its place, so the answer must
// carry this instance's session cookie name. It registers the cleanup that
// stops the process.
func run(t testing.TB, conf, base, sessionKey string, verbose bool) error {
	t.Helper()
	out := &logBuffer{}
	cmd := exec.Command(binary, "-c", conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start glewlwyd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("glewlwyd exited at start: %s", out.tail())
		default:
		}
		ours, err := answersAs(base, sessionKey)
		if err == nil && ours {
			break
		}
		if err == nil || time.Now().After(deadline) { // another server, or none in time
			stop()
			return fmt.Errorf("glewlwyd did not answer on %s within %s (other server: %v): %s", base, startTimeout, err == nil, out.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() || verbose {
			t.Logf("glewlwyd log:\n%s", out.String())
		}
	})
	return nil
}

// answersAs logs in as the seeded admin and reports whether the session
// cookie has the name this instance was configured with. An error means
// nothing answered.
func answersAs(base, sessionKey string) (bool, error) {
	probe := &http.Client{Timeout: 5 * time.Second}
	body := strings.NewReader(`{"username":"` + adminUser + `","password":"` + adminPassword + `"}`)
	resp, err := probe.Post(base+"/api/auth/", "application/json", body)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == sessionKey {
			return true, nil
		}
	}
	return false, nil
}

// provision configures the fresh instance through the admin REST API.
func (p *Provider) provision(t testing.TB, opts Options) {
	t.Helper()
	p.call(t, p.admin, "POST", "/api/auth/", map[string]any{"username": adminUser, "password": adminPassword}, 200)

	// A "groups" array in the user backend, so the groups claim is a JSON array.
	var users struct {
		Parameters map[string]any `json:"parameters"`
	}
	p.getJSON(t, p.admin, "/api/mod/user/database", &users)
	format, _ := users.Parameters["data-format"].(map[string]any)
	if format == nil {
		format = map[string]any{}
	}
	format["groups"] = map[string]any{"multiple": true, "read": true, "write": true, "profile-read": true, "profile-write": false}
	users.Parameters["data-format"] = format
	p.call(t, p.admin, "PUT", "/api/mod/user/database", map[string]any{
		"module": "database", "name": "database", "display_name": "Database backend", "order_rank": 0,
		"parameters": users.Parameters, "enabled": true, "readonly": false, "multiple_passwords": false,
	}, 200)
	p.call(t, p.admin, "PUT", "/api/mod/user/database/reset", nil, 200)

	// HOTP rather than TOTP in tests: a TOTP code is good once per 30 s
	// window, so two logins in a row would wait for the clock.
	p.call(t, p.admin, "POST", "/api/mod/scheme/", map[string]any{
		"module": "otp", "name": OTPScheme, "display_name": "OTP", "expiration": 600, "max_use": 0, "allow_user_register": true,
		"parameters": map[string]any{
			"issuer": "glewlwydtest", "secret-minimum-size": 16, "otp-length": 6,
			"hotp-allow": true, "hotp-window": 10, "totp-allow": true, "totp-window": 30, "totp-start-offset": 0,
		},
	}, 200)

	for _, s := range []string{"profile", "email", GroupsScope} {
		p.call(t, p.admin, "POST", "/api/scope/", map[string]any{
			"name": s, "display_name": s, "description": s, "password_required": true, "password_max_age": 0, "scheme": map[string]any{},
		}, 200)
	}
	p.call(t, p.admin, "POST", "/api/scope/", map[string]any{
		"name": MFAScope, "display_name": "MFA", "description": "needs the OTP scheme", "password_required": true, "password_max_age": 0,
		"scheme":          map[string]any{"0": []any{map[string]any{"scheme_type": "otp", "scheme_name": OTPScheme}}},
		"scheme_required": map[string]any{"0": 1},
	}, 200)

	key, pub, err := signingKey()
	if err != nil {
		t.Fatalf("glewlwydtest: %v", err)
	}
	claim := func(name, property string) map[string]any {
		return map[string]any{"name": name, "user-property": property, "type": "string", "mandatory": true, "on-demand": false, "scope": []any{}}
	}
	p.call(t, p.admin, "POST", "/api/mod/plugin/", map[string]any{
		"module": "oidc", "name": PluginName, "display_name": "OIDC", "enabled": true,
		"parameters": map[string]any{
			"iss": p.Issuer, "jwt-type": "ecdsa", "jwt-key-size": "256", "key": key, "cert": pub,
			"access-token-duration": int(opts.TokenLifetime.Seconds()), "refresh-token-duration": 86400, "code-duration": 600,
			"refresh-token-rolling": true, "allow-non-oidc": false,
			"auth-type-code-enabled": true, "auth-type-token-enabled": false, "auth-type-id-token-enabled": true,
			"auth-type-none-enabled": false, "auth-type-password-enabled": false, "auth-type-client-enabled": false,
			"auth-type-device-enabled": true, "auth-type-refresh-enabled": true,
			"scope": []any{}, "additional-parameters": []any{},
			// preferred_username and a groups array: what identity.OIDCVerifier reads by default.
			"claims":    []any{claim("groups", "groups"), claim("preferred_username", "username")},
			"jwks-show": true, "request-parameter-allow": false, "secret-type": "pairwise",
			"address-claim": map[string]any{"type": "no", "formatted": "", "street_address": "", "locality": "", "region": "",
				"postal_code": "", "country": "", "mandatory": false},
			"name-claim": "mandatory", "name-claim-scope": []any{}, "email-claim": "mandatory", "email-claim-scope": []any{},
			"scope-claim": "no", "scope-claim-scope": []any{}, "allowed-scope": []any{"openid"},
			"pkce-allowed": true, "pkce-method-plain-allowed": false, "pkce-required-public-client": true,
			"device-authorization-expiration": 600, "device-authorization-interval": 1,
		},
	}, 200)

	client := map[string]any{
		"client_id": ClientID, "name": "sshward", "enabled": true, "scope": []any{},
		"redirect_uri":       []any{LoopbackRedirectURI},
		"authorization_type": []any{"code", "device_authorization", "refresh_token"},
		"confidential":       p.ClientSecret != "",
	}
	if p.ClientSecret != "" {
		// glewlwyd refuses a confidential client (unauthorized_client) until
		// it names the methods it may authenticate with.
		client["password"] = p.ClientSecret
		client["token_endpoint_auth_method"] = []any{"client_secret_basic", "client_secret_post"}
	}
	if opts.Client != nil {
		client = opts.Client
	}
	p.call(t, p.admin, "POST", "/api/client/", client, 200)

	var disc struct {
		Issuer string `json:"issuer"`
	}
	p.getJSON(t, http.DefaultClient, "/api/"+PluginName+"/.well-known/openid-configuration", &disc)
	if disc.Issuer != p.Issuer {
		t.Fatalf("glewlwydtest: discovery says issuer %q, want %q", disc.Issuer, p.Issuer)
	}
}

// signingKey makes the P-256 key the OIDC plugin signs with (ES256):
// glewlwyd wants PEM, the private key as SEC 1 and the public one as PKIX.
func signingKey() (private, public string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return "", "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})), nil
}

// AddUser creates a user with the given password and groups, email
// NAME@example.test, all Scopes, and every scope granted to the client
// (glewlwyd otherwise keeps only openid). withOTP registers an HOTP
// secret, returned base32-encoded; NextOTP gives the code to log in with.
func (p *Provider) AddUser(t testing.TB, name, password string, groups []string, withOTP bool) (otpSecret string) {
	t.Helper()
	if groups == nil {
		groups = []string{}
	}
	p.call(t, p.admin, "POST", "/api/user/", map[string]any{
		"username": name, "name": name, "email": name + "@example.test", "password": password,
		"enabled": true, "scope": Scopes, "groups": groups,
	}, 200)
	p.call(t, p.admin, "PUT", "/api/delegate/"+name+"/auth/grant/"+p.ClientID,
		map[string]any{"scope": strings.Join(Scopes, " ")}, 200)
	if !withOTP {
		return ""
	}
	raw := make([]byte, 20) // 160 bits, as RFC 4226 §4 recommends
	_, _ = rand.Read(raw)   // never fails (crypto/rand)
	secret := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw)
	p.call(t, p.admin, "POST", "/api/delegate/"+name+"/profile/scheme/register/", map[string]any{
		"username": name, "scheme_type": "otp", "scheme_name": OTPScheme,
		"value": map[string]any{"type": "HOTP", "secret": secret, "moving_factor": 0},
	}, 200)
	p.mu.Lock()
	p.hotp[name] = secret
	p.mu.Unlock()
	return secret
}

// NextOTP returns the HOTP code (RFC 4226) glewlwyd accepts next for the
// user: the code at the moving factor glewlwyd holds now, read through the
// admin API. glewlwyd 2.7.5 accepts that code only (its hotp-window did not
// widen it in tests), so this does not count codes itself; calling it twice
// without a login in between gives the same code.
func (p *Provider) NextOTP(t testing.TB, user string) string {
	t.Helper()
	p.mu.Lock()
	secret, ok := p.hotp[user]
	p.mu.Unlock()
	if !ok {
		t.Fatalf("glewlwydtest: user %q has no OTP: AddUser(..., withOTP=true)", user)
	}
	var reg struct {
		MovingFactor *uint64 `json:"moving_factor"`
	}
	body := p.call(t, p.admin, "PUT", "/api/delegate/"+user+"/profile/scheme/register/",
		map[string]any{"username": user, "scheme_type": "otp", "scheme_name": OTPScheme}, 200)
	if err := json.Unmarshal(body, &reg); err != nil || reg.MovingFactor == nil {
		t.Fatalf("glewlwydtest: OTP registration of %q has no moving_factor (err %v)", user, err)
	}
	code, err := hotp.GenerateCode(secret, *reg.MovingFactor)
	if err != nil {
		t.Fatalf("glewlwydtest: hotp for %q: %v", user, err)
	}
	return code
}

// CompleteAuthCode plays the browser for an authorization URL made by a
// client (such as oidcflow.AuthCode): it logs the user in (POST /api/auth,
// and a second POST with otp when it is not empty), asks glewlwyd to go on
// without its login page (g_continue), and follows the redirect to the
// client's loopback callback, which must answer 200. The redirect URI in
// authURL is registered on the client first.
func (p *Provider) CompleteAuthCode(t testing.TB, authURL, user, password, otp string) {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatalf("glewlwydtest: auth URL: %v", err)
	}
	q := u.Query()
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		t.Fatalf("glewlwydtest: auth URL has no redirect_uri")
	}
	p.AllowRedirectURI(t, redirect)
	browser := p.login(t, user, password, otp)

	q.Set("g_continue", "")
	u.RawQuery = q.Encode()
	loc := p.redirect(t, browser, u.String())
	if !strings.HasPrefix(loc, redirect+"?") {
		t.Fatalf("glewlwydtest: glewlwyd sent the browser to %s, not to %s (scope %q needs an OTP, or the scopes are not granted?)",
			loc, redirect, q.Get("scope"))
	}
	resp, err := httpGet(loc)
	if err != nil {
		t.Fatalf("glewlwydtest: follow the redirect to the client: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("glewlwydtest: the client's callback answered %s", resp.Status)
	}
}

// ApproveDevice plays the user of the device flow: it logs in as
// CompleteAuthCode does and approves userCode (GET /api/oidc/device with
// g_continue). Without otp glewlwyd still approves a request for the MFA
// scope, but the token has no "otp" in amr.
func (p *Provider) ApproveDevice(t testing.TB, userCode, user, password, otp string) {
	t.Helper()
	browser := p.login(t, user, password, otp)
	loc := p.redirect(t, browser, p.Issuer+"/device?code="+url.QueryEscape(userCode)+"&g_continue")
	if !strings.Contains(loc, "prompt=deviceComplete") {
		t.Fatalf("glewlwydtest: glewlwyd did not approve device code %q: redirected to %s", userCode, loc)
	}
}

// AllowRedirectURI registers uri on the client, once.
func (p *Provider) AllowRedirectURI(t testing.TB, uri string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.redirects[uri] {
		return
	}
	if p.fixed {
		t.Fatalf("glewlwydtest: redirect URI %s is not registered on client %s (Options.Client fixes them)", uri, p.ClientID)
	}
	var client map[string]any
	p.getJSON(t, p.admin, "/api/client/"+p.ClientID, &client)
	uris, _ := client["redirect_uri"].([]any)
	client["redirect_uri"] = append(uris, uri)
	if p.ClientSecret != "" {
		client["password"] = p.ClientSecret
	}
	p.call(t, p.admin, "PUT", "/api/client/"+p.ClientID, client, 200)
	p.redirects[uri] = true
}

// login returns a browser-like client holding a glewlwyd session for user.
func (p *Provider) login(t testing.TB, user, password, otp string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: noRedirect}
	p.call(t, browser, "POST", "/api/auth/", map[string]any{"username": user, "password": password}, 200)
	if otp != "" {
		p.call(t, browser, "POST", "/api/auth/", map[string]any{
			"username": user, "scheme_type": "otp", "scheme_name": OTPScheme, "value": map[string]any{"value": otp},
		}, 200)
	}
	return browser
}

// redirect GETs url and returns the Location of the 302 it must answer.
func (p *Provider) redirect(t testing.TB, c *http.Client, target string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", target, nil)
	if err != nil {
		t.Fatalf("glewlwydtest: %v", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("glewlwydtest: GET %s: %v", req.URL.Path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("glewlwydtest: GET %s: %s, want 302", req.URL.Path, resp.Status)
	}
	return resp.Header.Get("Location")
}

// call sends a JSON request to glewlwyd and fails the test unless it
// answers want. It returns the response body.
func (p *Provider) call(t testing.TB, c *http.Client, method, path string, body any, want int) []byte {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatalf("glewlwydtest: %v", err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.BaseURL+path, rd)
	if err != nil {
		t.Fatalf("glewlwydtest: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("glewlwydtest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("glewlwydtest: %s %s: %v", method, path, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("glewlwydtest: %s %s: %s, want %d: %s", method, path, resp.Status, want, out)
	}
	return out
}

func (p *Provider) getJSON(t testing.TB, c *http.Client, path string, v any) {
	t.Helper()
	if err := json.Unmarshal(p.call(t, c, "GET", path, nil, 200), v); err != nil {
		t.Fatalf("glewlwydtest: GET %s: %v", path, err)
	}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func httpGet(target string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", target, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// logBuffer collects glewlwyd's output; the process writes while the test reads.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail is the end of the log, for one-line failure messages.
func (b *logBuffer) tail() string {
	s := strings.TrimSpace(b.String())
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
