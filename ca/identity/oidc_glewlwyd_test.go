package identity_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/identity"
	"github.com/sshward/sshward/ca/identity/glewlwydtest"
	"github.com/sshward/sshward/ca/identity/oidcflow"
)

// TestOIDCAgainstGlewlwyd runs the whole OIDC path against a real provider:
// oidcflow gets ID tokens from glewlwyd (auth code + PKCE, device flow), and
// the verifier checks them and reads user, groups and MFA.
func TestOIDCAgainstGlewlwyd(t *testing.T) {
	p := glewlwydtest.Start(t, glewlwydtest.Options{})
	p.AddUser(t, "alice", "alice-pw", []string{"ops", "dev"}, true)
	p.AddUser(t, "bob", "bob-pw", nil, false)
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()

	v, err := identity.NewOIDCVerifier(ctx, identity.OIDCConfig{Issuer: p.Issuer, ClientID: p.ClientID})
	if err != nil {
		t.Fatal(err)
	}
	flowCfg := func(scopes ...string) oidcflow.Config {
		return oidcflow.Config{Issuer: p.Issuer, ClientID: p.ClientID, Scopes: append([]string{"openid", "profile", "email"}, scopes...)}
	}
	authCode := func(t *testing.T, user, password, otp string, scopes ...string) string {
		t.Helper()
		cfg := flowCfg(scopes...)
		cfg.OpenBrowser = func(u string) error {
			p.CompleteAuthCode(t, u, user, password, otp)
			return nil
		}
		raw, err := oidcflow.AuthCode(ctx, cfg)
		if err != nil {
			t.Fatalf("AuthCode: %v", err)
		}
		return raw
	}
	device := func(t *testing.T, user, password, otp string, scopes ...string) string {
		t.Helper()
		out := newCodeWriter()
		cfg := flowCfg(scopes...)
		cfg.Out = out
		type result struct {
			raw string
			err error
		}
		done := make(chan result, 1)
		go func() {
			raw, err := oidcflow.Device(ctx, cfg)
			done <- result{raw, err}
		}()
		select {
		case code := <-out.code:
			p.ApproveDevice(t, code, user, password, otp)
		case r := <-done:
			t.Fatalf("Device ended before printing a code: %v; output %q", r.err, out.String())
		}
		r := <-done
		if r.err != nil {
			t.Fatalf("Device: %v", r.err)
		}
		return r.raw
	}

	tokens := map[string]string{} // by test name, for the failure cases below
	tests := []struct {
		name   string
		login  func(t *testing.T) string
		user   string
		groups []string
		mfa    bool
	}{
		{"auth code, password only", func(t *testing.T) string {
			return authCode(t, "alice", "alice-pw", "", glewlwydtest.GroupsScope)
		}, "alice", []string{"ops", "dev"}, false},
		{"auth code with otp", func(t *testing.T) string {
			return authCode(t, "alice", "alice-pw", p.NextOTP(t, "alice"), glewlwydtest.GroupsScope, glewlwydtest.MFAScope)
		}, "alice", []string{"ops", "dev"}, true},
		{"device flow, password only", func(t *testing.T) string {
			return device(t, "bob", "bob-pw", "", glewlwydtest.GroupsScope)
		}, "bob", nil, false},
		{"device flow with otp", func(t *testing.T) string {
			return device(t, "alice", "alice-pw", p.NextOTP(t, "alice"), glewlwydtest.GroupsScope, glewlwydtest.MFAScope)
		}, "alice", []string{"ops", "dev"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.login(t)
			tokens[tt.name] = raw
			id, err := v.Verify(ctx, raw)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.User != tt.user || id.Email != tt.user+"@example.test" || id.Subject == "" {
				t.Errorf("user %q email %q sub %q, want %s", id.User, id.Email, id.Subject, tt.user)
			}
			if !slices.Equal(id.Groups, tt.groups) {
				t.Errorf("groups %q, want %q", id.Groups, tt.groups)
			}
			if id.MFA != tt.mfa || slices.Contains(id.AMR, "otp") != tt.mfa || !slices.Contains(id.AMR, "password") {
				t.Errorf("MFA %v amr %q, want MFA %v", id.MFA, id.AMR, tt.mfa)
			}
			if d := time.Until(id.Expiry); d < 50*time.Minute || d > 61*time.Minute {
				t.Errorf("expiry in %s, want about 1h (glewlwyd access-token-duration)", d)
			}
		})
	}

	// Failures, on a real glewlwyd token. glewlwyd cannot be asked for an
	// expired token, so the verifier's clock moves past exp instead.
	raw := tokens["auth code, password only"]
	if raw == "" {
		t.Fatal("no token from the auth code flow")
	}
	good, err := v.Verify(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(raw, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	forged := base64.RawURLEncoding.EncodeToString(bytes.Replace(payload, []byte(`"alice"`), []byte(`"root!"`), 1))
	sig := []byte(parts[2])
	if sig[10] == 'A' { // another base64url character: a different signature, still well formed
		sig[10] = 'B'
	} else {
		sig[10] = 'A'
	}
	failures := []struct {
		name  string
		cfg   identity.OIDCConfig
		token string
		check func(error) bool
	}{
		{"expired", identity.OIDCConfig{Issuer: p.Issuer, ClientID: p.ClientID, Now: func() time.Time { return good.Expiry.Add(time.Second) }}, raw,
			func(err error) bool {
				var e *identity.TokenExpiredError
				return errors.As(err, &e) && e.Expiry.Equal(good.Expiry)
			}},
		{"claims changed", identity.OIDCConfig{Issuer: p.Issuer, ClientID: p.ClientID}, parts[0] + "." + forged + "." + parts[2],
			func(err error) bool { return errors.Is(err, identity.ErrBadSignature) }},
		{"signature changed", identity.OIDCConfig{Issuer: p.Issuer, ClientID: p.ClientID}, parts[0] + "." + parts[1] + "." + string(sig),
			func(err error) bool { return errors.Is(err, identity.ErrBadSignature) }},
		{"wrong audience", identity.OIDCConfig{Issuer: p.Issuer, ClientID: "another-client"}, raw,
			func(err error) bool {
				var e *identity.AudienceError
				return errors.As(err, &e) && e.Want == "another-client" && slices.Equal(e.Got, []string{p.ClientID})
			}},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			v, err := identity.NewOIDCVerifier(ctx, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(ctx, tt.token)
			if !tt.check(err) {
				t.Errorf("Verify = %+v, %v: wrong outcome", id, err)
			}
		})
	}
}

// codeWriter is oidcflow's Out in device tests: it hands over the user code
// as soon as the instructions are printed.
type codeWriter struct {
	code chan string // buffered 1

	mu   sync.Mutex // guards the fields below
	buf  strings.Builder
	sent bool
}

var userCodeRE = regexp.MustCompile(`enter the code (\S+)\n`)

func newCodeWriter() *codeWriter { return &codeWriter{code: make(chan string, 1)} }

func (w *codeWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	if m := userCodeRE.FindStringSubmatch(w.buf.String()); m != nil && !w.sent {
		w.sent = true
		w.code <- m[1]
	}
	return len(b), nil
}

func (w *codeWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
