package oidcflow_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/identity/glewlwydtest"
	"github.com/sshward/sshward/ca/identity/oidcflow"
)

// TestFlowsAgainstGlewlwyd runs both flows against a real provider with a
// confidential client (the public client is covered by package identity's
// end-to-end test): the secret must reach the token endpoint, and for the
// device flow the device endpoint too.
func TestFlowsAgainstGlewlwyd(t *testing.T) {
	p := glewlwydtest.Start(t, glewlwydtest.Options{Confidential: true})
	if p.ClientSecret == "" {
		t.Fatal("confidential provider without a client secret")
	}
	p.AddUser(t, "carol", "carol-pw", []string{"sre"}, false)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	base := oidcflow.Config{Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: p.ClientSecret, Scopes: []string{glewlwydtest.GroupsScope}}

	t.Run("auth code", func(t *testing.T) {
		cfg := base
		var out strings.Builder
		cfg.Out = &out
		cfg.OpenBrowser = func(u string) error {
			p.CompleteAuthCode(t, u, "carol", "carol-pw", "")
			return nil
		}
		raw, err := oidcflow.AuthCode(ctx, cfg)
		if err != nil {
			t.Fatalf("AuthCode: %v\n%s", err, out.String())
		}
		checkClaims(t, raw, "carol", p.ClientID)
	})
	t.Run("device", func(t *testing.T) {
		cfg := base
		out := &codeWriter{code: make(chan string, 1)}
		cfg.Out = out
		done := make(chan error, 1)
		var raw string
		go func() {
			var err error
			raw, err = oidcflow.Device(ctx, cfg)
			done <- err
		}()
		select {
		case code := <-out.code:
			p.ApproveDevice(t, code, "carol", "carol-pw", "")
		case err := <-done:
			t.Fatalf("Device ended before printing a code: %v", err)
		}
		if err := <-done; err != nil {
			t.Fatalf("Device: %v", err)
		}
		checkClaims(t, raw, "carol", p.ClientID)
		if s := out.String(); !strings.Contains(s, "To log in, open "+p.Issuer+"/device\n") {
			t.Errorf("instructions %q do not name the verification URL", s)
		}
	})
	t.Run("device without the secret", func(t *testing.T) {
		cfg := base
		cfg.ClientSecret = ""
		_, err := oidcflow.Device(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), "unauthorized_client") {
			t.Fatalf("err = %v, want unauthorized_client: the secret above is what got us in", err)
		}
	})
}

// checkClaims reads the (already verified) token's payload.
func checkClaims(t *testing.T, raw, user, aud string) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("id token %q is not a JWS", raw)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		User string `json:"preferred_username"`
		Aud  any    `json:"aud"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.User != user || c.Aud != aud {
		t.Errorf("claims %s: want user %s, aud %s", b, user, aud)
	}
}

// codeWriter hands over the device flow's user code once it is printed.
type codeWriter struct {
	code chan string // buffered 1

	mu   sync.Mutex // guards the fields below
	buf  strings.Builder
	sent bool
}

var userCodeRE = regexp.MustCompile(`enter the code (\S+)\n`)

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
