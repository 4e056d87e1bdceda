package glewlwydtest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestProvider(t *testing.T) {
	p := Start(t, Options{})
	secret := p.AddUser(t, "dave", "dave-pw", []string{"a", "b"}, true)
	if p.AddUser(t, "erin", "erin-pw", nil, false) != "" {
		t.Error("AddUser without OTP returned a secret")
	}

	t.Run("discovery", func(t *testing.T) {
		var d struct {
			Issuer     string   `json:"issuer"`
			Device     string   `json:"device_authorization_endpoint"`
			PKCE       []string `json:"code_challenge_methods_supported"`
			Algs       []string `json:"id_token_signing_alg_values_supported"`
			Claims     []string `json:"claims_supported"`
			GrantTypes []string `json:"grant_types_supported"`
		}
		p.getJSON(t, http.DefaultClient, "/api/oidc/.well-known/openid-configuration", &d)
		if d.Issuer != p.Issuer || d.Device != p.Issuer+"/device_authorization" || !slices.Equal(d.PKCE, []string{"S256"}) ||
			!slices.Contains(d.Algs, "ES256") || !slices.Contains(d.Claims, "groups") || !slices.Contains(d.Claims, "preferred_username") ||
			!slices.Contains(d.GrantTypes, "urn:ietf:params:oauth:grant-type:device_code") {
			t.Errorf("discovery %+v", d)
		}
	})

	t.Run("otp codes follow glewlwyd's counter", func(t *testing.T) {
		if _, err := exec.LookPath("oathtool"); err != nil {
			t.Fatal("oathtool not installed: apt-get install oathtool")
		}
		for counter := range 3 {
			out, err := exec.Command("oathtool", "--hotp", "-b", secret, "-c", strconv.Itoa(counter)).Output()
			if err != nil {
				t.Fatal(err)
			}
			code := p.NextOTP(t, "dave")
			if want := strings.TrimSpace(string(out)); code != want {
				t.Fatalf("code %d = %s, oathtool says %s", counter, code, want)
			}
			if again := p.NextOTP(t, "dave"); again != code {
				t.Fatalf("NextOTP moved without a login: %s then %s", code, again)
			}
			p.login(t, "dave", "dave-pw", code) // glewlwyd moves to the next counter
		}
	})

	t.Run("redirect uris", func(t *testing.T) {
		p.AllowRedirectURI(t, "http://127.0.0.1:5555/callback")
		p.AllowRedirectURI(t, "http://127.0.0.1:5555/callback") // once only
		var c struct {
			RedirectURI []string `json:"redirect_uri"`
		}
		p.getJSON(t, p.admin, "/api/client/"+ClientID, &c)
		if !slices.Equal(c.RedirectURI, []string{LoopbackRedirectURI, "http://127.0.0.1:5555/callback"}) {
			t.Errorf("redirect_uri = %q", c.RedirectURI)
		}
	})

	t.Run("pkce required", func(t *testing.T) {
		browser := p.login(t, "erin", "erin-pw", "")
		q := url.Values{"response_type": {"code"}, "client_id": {ClientID}, "redirect_uri": {LoopbackRedirectURI},
			"scope": {"openid"}, "state": {"s"}, "nonce": {"n"}, "g_continue": {""}}
		loc := p.redirect(t, browser, p.Issuer+"/auth?"+q.Encode())
		if !strings.HasPrefix(loc, LoopbackRedirectURI+"?") || !strings.Contains(loc, "error=invalid_request") {
			t.Errorf("code request without PKCE redirected to %s, want error=invalid_request", loc)
		}
	})

	t.Run("user record", func(t *testing.T) {
		var u map[string]any
		if err := json.Unmarshal(p.call(t, p.admin, "GET", "/api/user/dave", nil, 200), &u); err != nil {
			t.Fatal(err)
		}
		if u["email"] != "dave@example.test" || !slices.Equal(toStrings(u["groups"]), []string{"a", "b"}) {
			t.Errorf("user %v", u)
		}
	})
}

func toStrings(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, e := range list {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}
