package oidcflow

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
)

// fakeProvider is discovery and keys from go-oidc's oidctest plus a token
// endpoint that checks PKCE and returns an ID token the test shapes.
type fakeProvider struct {
	srv *httptest.Server
	key *ecdsa.PrivateKey

	mu        sync.Mutex // guards the fields below
	challenge string     // code_challenge from the last auth URL
	nonce     string     // nonce from the last auth URL
	idToken   func(nonce string) string
	tokenErr  string // pkce failure seen by the token endpoint
	issued    string // the last id token returned
}

func newFakeProvider(t *testing.T) *fakeProvider {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeProvider{key: key}
	disc := &oidctest.Server{
		PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: "ES256"}},
		Algorithms: []string{"ES256"},
	}
	mux := http.NewServeMux()
	mux.Handle("/", disc)
	mux.HandleFunc("POST /token", f.token)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	disc.SetIssuer(f.srv.URL)
	f.idToken = f.signed
	return f
}

func (f *fakeProvider) signed(nonce string) string {
	claims, _ := json.Marshal(map[string]any{
		"iss": f.srv.URL, "sub": "u1", "aud": "cli", "nonce": nonce,
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	})
	return oidctest.SignIDToken(f.key, "k1", "ES256", string(claims))
}

func (f *fakeProvider) token(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
	if base64.RawURLEncoding.EncodeToString(sum[:]) != f.challenge || r.PostFormValue("code") != "the-code" ||
		r.PostFormValue("grant_type") != "authorization_code" {
		f.tokenErr = fmt.Sprintf("bad token request %v", r.PostForm)
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	resp := map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600}
	if tok := f.idToken(f.nonce); tok != "" {
		resp["id_token"] = tok
		f.issued = tok
	}
	_ = json.NewEncoder(w).Encode(resp)
}

// last returns what the token endpoint issued and any error it saw.
func (f *fakeProvider) last() (issued, tokenErr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued, f.tokenErr
}

// browse checks the auth URL the way a provider would, remembers the PKCE
// challenge and nonce, and returns the redirect URI and state.
func (f *fakeProvider) browse(t *testing.T, authURL string) (redirect *url.URL, state string) {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	redirect, err = url.Parse(q.Get("redirect_uri"))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case u.Path != "/auth", q.Get("response_type") != "code", q.Get("client_id") != "cli":
		t.Errorf("auth URL %s: want code flow for client cli", authURL)
	case q.Get("code_challenge_method") != "S256", len(q.Get("code_challenge")) != 43:
		t.Errorf("auth URL %s: want PKCE S256", authURL)
	case len(q.Get("state")) < 22, len(q.Get("nonce")) < 22:
		t.Errorf("auth URL %s: want random state and nonce of 128 bits", authURL)
	case redirect.Scheme != "http" || redirect.Path != "/callback" || redirect.Port() == "" || redirect.Port() == "0":
		t.Errorf("redirect_uri %s: want http://HOST:PORT/callback", redirect)
	case !strings.Contains(q.Get("scope"), "openid"):
		t.Errorf("scope %q lacks openid", q.Get("scope"))
	}
	f.mu.Lock()
	f.challenge, f.nonce = q.Get("code_challenge"), q.Get("nonce")
	f.mu.Unlock()
	return redirect, q.Get("state")
}

// get is the browser following a redirect; it returns the status.
func get(u *url.URL, query url.Values) (int, error) {
	v := *u
	v.RawQuery = query.Encode()
	resp, err := http.Get(v.String())
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestAuthCode(t *testing.T) {
	tests := []struct {
		name    string
		idToken func(f *fakeProvider) func(nonce string) string
		browser func(t *testing.T, redirect *url.URL, state string) // plays the browser
		wantErr func(error) bool
	}{
		{
			name: "success",
			browser: func(t *testing.T, redirect *url.URL, state string) {
				if code, err := get(redirect, url.Values{"state": {state}, "code": {"the-code"}}); err != nil || code != 200 {
					t.Errorf("callback: %d %v, want 200", code, err)
				}
			},
		},
		{
			name: "a wrong state is refused and does not end the login",
			browser: func(t *testing.T, redirect *url.URL, state string) {
				if code, err := get(redirect, url.Values{"state": {"guess"}, "code": {"evil-code"}}); err != nil || code != 400 {
					t.Errorf("callback with wrong state: %d %v, want 400", code, err)
				}
				if code, err := get(&url.URL{Scheme: "http", Host: redirect.Host, Path: "/favicon.ico"}, nil); err != nil || code != 404 {
					t.Errorf("other path: %d %v, want 404", code, err)
				}
				if code, err := get(redirect, url.Values{"state": {state}, "code": {"the-code"}}); err != nil || code != 200 {
					t.Errorf("callback: %d %v, want 200", code, err)
				}
			},
		},
		{
			name: "provider error",
			browser: func(t *testing.T, redirect *url.URL, state string) {
				_, _ = get(redirect, url.Values{"state": {state}, "error": {"access_denied"}, "error_description": {"user said no"}})
			},
			wantErr: func(err error) bool {
				var ae *AuthError
				return errors.As(err, &ae) && ae.Code == "access_denied" && ae.Description == "user said no"
			},
		},
		{
			name: "no code",
			browser: func(t *testing.T, redirect *url.URL, state string) {
				_, _ = get(redirect, url.Values{"state": {state}})
			},
			wantErr: func(err error) bool { return err != nil && strings.Contains(err.Error(), "without a code") },
		},
		{
			name:    "nonce of another login",
			idToken: func(f *fakeProvider) func(string) string { return func(string) string { return f.signed("other") } },
			browser: func(t *testing.T, redirect *url.URL, state string) {
				_, _ = get(redirect, url.Values{"state": {state}, "code": {"the-code"}})
			},
			wantErr: func(err error) bool { return errors.Is(err, ErrNonceMismatch) },
		},
		{
			name:    "no id token",
			idToken: func(f *fakeProvider) func(string) string { return func(string) string { return "" } },
			browser: func(t *testing.T, redirect *url.URL, state string) {
				_, _ = get(redirect, url.Values{"state": {state}, "code": {"the-code"}})
			},
			wantErr: func(err error) bool { return errors.Is(err, ErrNoIDToken) },
		},
		{
			name: "id token not signed by the provider",
			idToken: func(f *fakeProvider) func(string) string {
				other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				return func(nonce string) string {
					claims, _ := json.Marshal(map[string]any{"iss": f.srv.URL, "sub": "u1", "aud": "cli", "nonce": nonce, "exp": time.Now().Add(time.Hour).Unix()})
					return oidctest.SignIDToken(other, "k1", "ES256", string(claims))
				}
			},
			browser: func(t *testing.T, redirect *url.URL, state string) {
				_, _ = get(redirect, url.Values{"state": {state}, "code": {"the-code"}})
			},
			wantErr: func(err error) bool { return err != nil && strings.Contains(err.Error(), "check id token") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeProvider(t)
			if tt.idToken != nil {
				f.idToken = tt.idToken(f)
			}
			var redirect *url.URL
			var out strings.Builder
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			raw, err := AuthCode(ctx, Config{
				Issuer: f.srv.URL, ClientID: "cli", Scopes: []string{"profile"}, Out: &out,
				OpenBrowser: func(authURL string) error {
					var state string
					redirect, state = f.browse(t, authURL)
					tt.browser(t, redirect, state)
					return nil
				},
			})
			if tt.wantErr != nil {
				if !tt.wantErr(err) {
					t.Fatalf("err = %v: not the expected failure", err)
				}
			} else {
				issued, tokenErr := f.last()
				if err != nil {
					t.Fatalf("AuthCode: %v (token endpoint: %s)", err, tokenErr)
				}
				if raw == "" || raw != issued {
					t.Errorf("AuthCode returned %q, want the provider's id token", raw)
				}
			}
			if !strings.Contains(out.String(), "open this URL") {
				t.Errorf("instructions on Out: %q", out.String())
			}
			// The listener is gone once AuthCode returns.
			if redirect != nil {
				if c, err := net.DialTimeout("tcp", redirect.Host, time.Second); err == nil {
					c.Close()
					t.Errorf("redirect listener %s still accepts connections", redirect.Host)
				}
			}
		})
	}
}

// TestAuthCodeBrowserFails: with no browser the user opens the printed URL;
// the flow waits for them.
func TestAuthCodeBrowserFails(t *testing.T) {
	f := newFakeProvider(t)
	out := &lockedWriter{}
	browserDone := make(chan error, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	raw, err := AuthCode(ctx, Config{
		Issuer: f.srv.URL, ClientID: "cli", Out: out,
		OpenBrowser: func(authURL string) error {
			redirect, state := f.browse(t, authURL)
			go func() { // the user, a moment later
				time.Sleep(50 * time.Millisecond)
				_, err := get(redirect, url.Values{"state": {state}, "code": {"the-code"}})
				browserDone <- err
			}()
			return errors.New("no display")
		},
	})
	if err != nil || raw == "" {
		t.Fatalf("AuthCode: %q, %v", raw, err)
	}
	if err := <-browserDone; err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "Could not open a browser (no display)") {
		t.Errorf("Out = %q: want the browser failure reported", s)
	}
}

func TestAuthCodeTimeout(t *testing.T) {
	f := newFakeProvider(t)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := AuthCode(ctx, Config{Issuer: f.srv.URL, ClientID: "cli"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestConfigCheck(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // empty: valid
	}{
		{"minimal", Config{Issuer: "https://idp", ClientID: "c"}, ""},
		{"localhost", Config{Issuer: "https://idp", ClientID: "c", ListenAddr: "localhost:8085"}, ""},
		{"ipv6 loopback", Config{Issuer: "https://idp", ClientID: "c", ListenAddr: "[::1]:0"}, ""},
		{"no issuer", Config{ClientID: "c"}, "Issuer"},
		{"no client", Config{Issuer: "https://idp"}, "ClientID"},
		{"all interfaces", Config{Issuer: "https://idp", ClientID: "c", ListenAddr: "0.0.0.0:0"}, "loopback"},
		{"empty host", Config{Issuer: "https://idp", ClientID: "c", ListenAddr: ":8085"}, "loopback"},
		{"lan address", Config{Issuer: "https://idp", ClientID: "c", ListenAddr: "192.168.1.10:0"}, "loopback"},
		{"no port", Config{Issuer: "https://idp", ClientID: "c", ListenAddr: "127.0.0.1"}, "ListenAddr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Check()
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Check() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestRedirectURL(t *testing.T) {
	bound := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 43210}
	for listen, want := range map[string]string{
		"127.0.0.1:0":    "http://127.0.0.1:43210/callback",
		"localhost:0":    "http://localhost:43210/callback",
		"[::1]:43210":    "http://[::1]:43210/callback",
		"127.0.0.1:8085": "http://127.0.0.1:43210/callback",
	} {
		if got := redirectURL(listen, bound); got != want {
			t.Errorf("redirectURL(%q) = %q, want %q", listen, got, want)
		}
	}
}

func TestDeviceWithoutEndpoint(t *testing.T) {
	f := newFakeProvider(t) // oidctest announces no device endpoint
	_, err := Device(t.Context(), Config{Issuer: f.srv.URL, ClientID: "cli"})
	if !errors.Is(err, ErrNoDeviceEndpoint) {
		t.Fatalf("err = %v, want ErrNoDeviceEndpoint", err)
	}
}

type lockedWriter struct {
	mu sync.Mutex // guards b
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
