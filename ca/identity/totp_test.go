package identity

import (
	"errors"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// oathtool computes a TOTP code independently of pquerna/otp (OATH Toolkit).
func oathtool(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	if _, err := exec.LookPath("oathtool"); err != nil {
		t.Fatal("oathtool not installed: apt-get install oathtool")
	}
	out, err := exec.Command("oathtool", "--totp", "-b", secret, "-N", "@"+strconv.FormatInt(at.Unix(), 10)).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestNewTOTP(t *testing.T) {
	secret, u, err := NewTOTP("sshward CA", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != 32 || strings.ContainsAny(secret, "=abcdefghijklmnopqrstuvwxyz01890") {
		t.Errorf("secret %q: want 32 base32 characters (160 bits), no padding", secret)
	}
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := parsed.Query()
	if parsed.Scheme != "otpauth" || parsed.Host != "totp" || q.Get("secret") != secret || q.Get("issuer") != "sshward CA" ||
		q.Get("digits") != "6" || q.Get("period") != "30" || q.Get("algorithm") != "SHA1" {
		t.Errorf("url %q does not describe this secret as SHA1/6 digits/30 s", u)
	}
	if !strings.Contains(parsed.Path, "alice@example.com") {
		t.Errorf("url path %q does not name the account", parsed.Path)
	}
	again, _, err := NewTOTP("sshward CA", "alice@example.com")
	if err != nil || again == secret {
		t.Errorf("second secret %q (err %v): want a new random one", again, err)
	}
	if _, _, err := NewTOTP("", "alice"); err == nil {
		t.Error("NewTOTP without issuer: want error")
	}
}

func TestCheckTOTP(t *testing.T) {
	const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	now := time.Unix(1795239146, 0) // step 59841304, 26 s into it
	step := now.Unix() / 30
	code := oathtool(t, secret, now)
	prev := oathtool(t, secret, now.Add(-30*time.Second))
	next := oathtool(t, secret, now.Add(30*time.Second))
	tooOld := oathtool(t, secret, now.Add(-60*time.Second))
	tooNew := oathtool(t, secret, now.Add(60*time.Second))
	wrong := "000000"
	if wrong == code || wrong == prev || wrong == next {
		t.Fatal("fixture collision: pick another wrong code")
	}
	tests := []struct {
		name     string
		secret   string
		code     string
		lastStep int64
		wantStep int64
		wantErr  error
	}{
		{"current step", secret, code, 0, step, nil},
		{"lower-case secret", strings.ToLower(secret), code, 0, step, nil},
		{"previous step (skew)", secret, prev, 0, step - 1, nil},
		{"next step (skew)", secret, next, 0, step + 1, nil},
		{"two steps back", secret, tooOld, 0, 0, ErrBadOTP},
		{"two steps ahead", secret, tooNew, 0, 0, ErrBadOTP},
		{"wrong code", secret, wrong, 0, 0, ErrBadOTP},
		{"replay of the current step", secret, code, step, 0, ErrOTPReplayed},
		{"older code after a newer one", secret, prev, step, 0, ErrOTPReplayed},
		{"next code after the current one", secret, next, step, step + 1, nil},
		{"five digits", secret, code[:5], 0, 0, ErrBadOTP},
		{"seven digits", secret, code + "0", 0, 0, ErrBadOTP},
		{"spaces", secret, code[:3] + " " + code[3:5], 0, 0, ErrBadOTP},
		{"not digits", secret, "12345a", 0, 0, ErrBadOTP},
		{"empty", secret, "", 0, 0, ErrBadOTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckTOTP(tt.secret, tt.code, now, tt.lastStep)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.wantStep {
				t.Errorf("step = %d, want %d", got, tt.wantStep)
			}
		})
	}
	t.Run("bad secret", func(t *testing.T) {
		_, err := CheckTOTP("not base32!", code, now, 0)
		if err == nil || errors.Is(err, ErrBadOTP) || strings.Contains(err.Error(), "not base32!") {
			t.Errorf("err = %v: want a storage error that does not echo the secret", err)
		}
	})
}

func TestCheckTOTPNewSecret(t *testing.T) {
	secret, _, err := NewTOTP("sshward", "bob")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	step, err := CheckTOTP(secret, oathtool(t, secret, now), now, 0)
	if err != nil || step != now.Unix()/30 {
		t.Fatalf("fresh secret, oathtool code: step %d err %v", step, err)
	}
}
