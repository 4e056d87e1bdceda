//lint:file-ignore SA1019 the tests prove that DSA keys are refused, so they must make one

package ca_test

import (
	"context"
	"crypto/dsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
)

const pw = "correct horse battery"

// keyPair writes a fresh ed25519 key to dir and returns its path and public key line.
func keyPair(t testing.TB, dir, name string) (string, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	line := string(ssh.MarshalAuthorizedKey(sp))
	os.WriteFile(path+".pub", []byte(line), 0o644)
	return path, line
}

// issue asks the CA for a cert over HTTPS and writes it beside the key.
func issue(t *testing.T, c *client.Client, keyPath, pubLine string, req api.CertRequest) (*ssh.Certificate, string) {
	t.Helper()
	req.PublicKey = pubLine
	resp, err := c.Cert(context.Background(), req)
	if err != nil {
		t.Fatalf("cert %s: %v", req.Tier, err)
	}
	certPath := keyPath + "-cert.pub"
	if err := os.WriteFile(certPath, []byte(resp.Certificate), 0o600); err != nil {
		t.Fatal(err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	return pk.(*ssh.Certificate), certPath
}

type world struct {
	ca    *catest.CA
	alice *client.Client // engineers: staging, no TOTP
	bob   *client.Client // sre with TOTP: production, MFA
	carol *client.Client // sre without TOTP: production refused
	dir   string
}

func newWorld(t *testing.T, o catest.Options) *world {
	t.Helper()
	w := &world{ca: catest.New(t, o), dir: t.TempDir()}
	w.ca.AddUser(t, "alice", pw, []string{"engineers"}, false)
	sec := w.ca.AddUser(t, "bob", pw, []string{"sre", "engineers"}, true)
	w.ca.AddUser(t, "carol", pw, []string{"sre"}, false)
	w.alice = w.ca.Client(t, w.ca.Login(t, "alice", pw, ""))
	w.bob = w.ca.Client(t, w.ca.Login(t, "bob", pw, catest.Code(t, sec, time.Now())))
	w.carol = w.ca.Client(t, w.ca.Login(t, "carol", pw, ""))
	return w
}

func TestKeygenShowsTierPolicy(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := newWorld(t, catest.Options{})
	tests := []struct {
		name   string
		c      *client.Client
		tier   string
		want   []string
		absent []string
	}{
		{"staging", w.alice, "staging", []string{
			"Type: ssh-ed25519-cert-v01@openssh.com user certificate", "Key ID: \"alice@local tier=staging req=- serial=",
			"deploy", "alice", "permit-pty", "permit-port-forwarding", "permit-agent-forwarding",
			"tier@sshward", "record-input@sshward", "Critical Options: (none)",
		}, []string{"permit-X11-forwarding", "permit-user-rc", "source-address"}},
		{"production", w.bob, "production", []string{
			"Key ID: \"bob@local tier=production req=- serial=", "bob", "permit-pty", "source-address 127.0.0.1",
			"tier@sshward", "end-on-expiry@sshward",
		}, []string{"permit-port-forwarding", "permit-agent-forwarding", "deploy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, pub := keyPair(t, w.dir, tc.name)
			cert, certPath := issue(t, tc.c, key, pub, api.CertRequest{Tier: tc.tier})
			out, err := exec.Command("ssh-keygen", "-L", "-f", certPath).CombinedOutput()
			if err != nil {
				t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
			}
			s := string(out)
			for _, want := range tc.want {
				if !strings.Contains(s, want) {
					t.Errorf("ssh-keygen -L lacks %q:\n%s", want, s)
				}
			}
			for _, no := range tc.absent {
				if strings.Contains(s, no) {
					t.Errorf("ssh-keygen -L has %q:\n%s", no, s)
				}
			}
			// Validity: backdated by at most a minute, TTL from the tier.
			tier, _ := w.ca.Policy.Tier(tc.tier)
			va, vb := time.Unix(int64(cert.ValidAfter), 0), time.Unix(int64(cert.ValidBefore), 0)
			if d := time.Since(va); d > time.Minute+5*time.Second || d < 55*time.Second {
				t.Errorf("valid after is %v in the past, want ~1m", d)
			}
			if got := vb.Sub(va) - time.Minute; got < tier.TTL-2*time.Second || got > tier.TTL+2*time.Second {
				t.Errorf("lifetime %v, want tier ttl %v", got, tier.TTL)
			}
			if !strings.Contains(s, "Serial: "+itoa(cert.Serial)) {
				t.Errorf("serial %d not shown:\n%s", cert.Serial, s)
			}
		})
	}
}

func TestSSHDTierIsolation(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := newWorld(t, catest.Options{})
	me := catest.CurrentUser(t)
	line := func(tier string) string { return string(ssh.MarshalAuthorizedKey(w.ca.UserCAs[tier].PublicKey())) }
	staging := catest.StartSSHD(t, catest.SSHDConfig{
		TrustedUserCAKeys: []string{line("staging")},
		Principals:        map[string][]string{me: {"deploy", "bob"}},
	})
	prod := catest.StartSSHD(t, catest.SSHDConfig{
		TrustedUserCAKeys: []string{line("production"), line("break-glass")},
		Principals:        map[string][]string{me: {"deploy", "bob"}},
	})
	stKey, stPub := keyPair(t, w.dir, "st")
	_, stCert := issue(t, w.bob, stKey, stPub, api.CertRequest{Tier: "staging"})
	prKey, prPub := keyPair(t, w.dir, "pr")
	_, prCert := issue(t, w.bob, prKey, prPub, api.CertRequest{Tier: "production"})
	ctx := context.Background()
	cases := []struct {
		name      string
		sshd      *catest.SSHD
		key, cert string
		ok        bool
	}{
		{"staging cert on staging host", staging, stKey, stCert, true},
		{"production cert on staging host", staging, prKey, prCert, false},
		{"staging cert on production host", prod, stKey, stCert, false},
		{"production cert on production host", prod, prKey, prCert, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := catest.SSH(ctx, tc.sshd.Addr, me, tc.key, tc.cert, nil, "echo", "sshward-ok")
			if tc.ok && (err != nil || !strings.Contains(out, "sshward-ok")) {
				t.Fatalf("want login, got %v: %s\nsshd log:\n%s", err, out, tc.sshd.Log())
			}
			if !tc.ok && (err == nil || strings.Contains(out, "sshward-ok")) {
				t.Fatalf("want refusal, got login: %s", out)
			}
			if !tc.ok && !strings.Contains(out, "Permission denied") {
				t.Fatalf("want Permission denied, got: %s", out)
			}
		})
	}
}

func TestRevocationReachesKRLAndSSHD(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := newWorld(t, catest.Options{})
	ctx := context.Background()
	me := catest.CurrentUser(t)
	k1, p1 := keyPair(t, w.dir, "k1")
	c1, cert1 := issue(t, w.alice, k1, p1, api.CertRequest{Tier: "staging"})
	k2, p2 := keyPair(t, w.dir, "k2")
	c2, cert2 := issue(t, w.alice, k2, p2, api.CertRequest{Tier: "staging"})
	k3, p3 := keyPair(t, w.dir, "k3")
	_, cert3 := issue(t, w.alice, k3, p3, api.CertRequest{Tier: "staging"})

	if _, err := w.ca.Authority.Revoke(ctx, revokeSerial(c1.Serial)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ca.Authority.Revoke(ctx, revokeKeyID(c2.KeyId)); err != nil {
		t.Fatal(err)
	}
	krlBytes, err := w.ca.Client(t, "").KRL(ctx, "staging")
	if err != nil {
		t.Fatal(err)
	}
	krlPath := filepath.Join(w.dir, "staging.krl")
	os.WriteFile(krlPath, krlBytes, 0o644)
	for _, tc := range []struct {
		cert    string
		revoked bool
	}{{cert1, true}, {cert2, true}, {cert3, false}} {
		out, err := exec.Command("ssh-keygen", "-Q", "-f", krlPath, tc.cert).CombinedOutput()
		gotRevoked := strings.Contains(string(out), "REVOKED")
		if gotRevoked != tc.revoked || (err == nil) == tc.revoked {
			t.Errorf("ssh-keygen -Q %s: revoked=%v err=%v out=%s, want revoked=%v", filepath.Base(tc.cert), gotRevoked, err, out, tc.revoked)
		}
	}
	sshd := catest.StartSSHD(t, catest.SSHDConfig{
		TrustedUserCAKeys: []string{string(ssh.MarshalAuthorizedKey(w.ca.UserCAs["staging"].PublicKey()))},
		RevokedKeys:       krlPath,
		Principals:        map[string][]string{me: {"alice"}},
	})
	if out, err := catest.SSH(ctx, sshd.Addr, me, k1, cert1, nil, "true"); err == nil {
		t.Fatalf("revoked serial logged in: %s", out)
	}
	if out, err := catest.SSH(ctx, sshd.Addr, me, k2, cert2, nil, "true"); err == nil {
		t.Fatalf("revoked key id logged in: %s", out)
	}
	if out, err := catest.SSH(ctx, sshd.Addr, me, k3, cert3, nil, "echo", "fine"); err != nil || !strings.Contains(out, "fine") {
		t.Fatalf("unrevoked cert refused: %v %s\n%s", err, out, sshd.Log())
	}
	if !strings.Contains(sshd.Log(), "revoked") {
		t.Errorf("sshd log does not mention the revocation:\n%s", sshd.Log())
	}
	// The production KRL covers break-glass too (one RevokedKeys file per host).
	prodKRL, err := w.ca.Client(t, "").KRL(ctx, "production")
	if err != nil || len(prodKRL) == 0 {
		t.Fatalf("production KRL: %v", err)
	}
}

func TestCertUnusableAfterTTL(t *testing.T) {
	catest.NeedOpenSSH(t)
	t.Parallel()
	pol := strings.Replace(string(defaultPolicy(t)), "staging:", "quick:\n    hosts: [\"*.quick\"]\n    ttl: 1m\n    max_ttl: 1m\n    principals: {engineers: [\"{{user}}\"]}\n    extensions: [permit-pty]\n  staging:", 1)
	w := newWorld(t, catest.Options{Policy: []byte(pol)})
	me := catest.CurrentUser(t)
	sshd := catest.StartSSHD(t, catest.SSHDConfig{
		TrustedUserCAKeys: []string{string(ssh.MarshalAuthorizedKey(w.ca.UserCAs["quick"].PublicKey()))},
		Principals:        map[string][]string{me: {"alice"}},
	})
	key, pub := keyPair(t, w.dir, "q")
	cert, certPath := issue(t, w.alice, key, pub, api.CertRequest{Tier: "quick"})
	ctx := context.Background()
	if out, err := catest.SSH(ctx, sshd.Addr, me, key, certPath, nil, "echo", "in-time"); err != nil || !strings.Contains(out, "in-time") {
		t.Fatalf("fresh 1-minute cert refused: %v %s", err, out)
	}
	until := time.Until(time.Unix(int64(cert.ValidBefore), 0)) + 1500*time.Millisecond
	if until > 70*time.Second {
		t.Fatalf("1m tier cert valid for %v", until)
	}
	time.Sleep(until)
	out, err := catest.SSH(ctx, sshd.Addr, me, key, certPath, nil, "echo", "too-late")
	if err == nil || strings.Contains(out, "too-late") {
		t.Fatalf("expired cert still logs in: %s", out)
	}
	if !strings.Contains(sshd.Log(), "expired") && !strings.Contains(sshd.Log(), "invalid") {
		t.Errorf("sshd log does not say why:\n%s", sshd.Log())
	}
}

func TestRefusals(t *testing.T) {
	w := newWorld(t, catest.Options{})
	ctx := context.Background()
	_, goodPub := keyPair(t, w.dir, "good")
	dsaPub := func() string {
		var k dsa.PrivateKey
		if err := dsa.GenerateParameters(&k.Parameters, rand.Reader, dsa.L1024N160); err != nil {
			t.Fatal(err)
		}
		dsa.GenerateKey(&k, rand.Reader)
		p, err := ssh.NewPublicKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return string(ssh.MarshalAuthorizedKey(p))
	}()
	rsaPub := func(bits int) string {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := ssh.NewPublicKey(&k.PublicKey)
		return string(ssh.MarshalAuthorizedKey(p))
	}
	cases := []struct {
		name     string
		c        *client.Client
		req      api.CertRequest
		code     string
		status   int
		contains string
	}{
		{"production without MFA", w.carol, api.CertRequest{Tier: "production"}, api.CodeMFARequired, 403, "multi-factor"},
		{"principal outside policy", w.alice, api.CertRequest{Tier: "staging", Principals: []string{"root"}}, api.CodePrincipal, 403, "root"},
		{"tier without entitlement", w.alice, api.CertRequest{Tier: "production"}, api.CodeForbidden, 403, "production"},
		{"unknown tier", w.alice, api.CertRequest{Tier: "qa"}, api.CodeUnknownTier, 400, "qa"},
		{"ttl above max", w.alice, api.CertRequest{Tier: "staging", TTL: api.Duration(5 * time.Hour)}, api.CodeTTL, 400, "2h or less"},
		{"break-glass without approval", w.bob, api.CertRequest{Tier: "break-glass"}, api.CodeForbidden, 403, ""},
		{"DSA key", w.alice, api.CertRequest{Tier: "staging", PublicKey: dsaPub}, api.CodeKeyType, 400, "ssh-dss"},
		{"RSA 1024", w.alice, api.CertRequest{Tier: "staging", PublicKey: rsaPub(1024)}, api.CodeKeyType, 400, "1024"},
		{"garbage key", w.alice, api.CertRequest{Tier: "staging", PublicKey: "ssh-ed25519 AAAA!!!"}, api.CodeBadRequest, 400, "public_key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			if req.PublicKey == "" {
				req.PublicKey = goodPub
			}
			before := countCerts(t, w)
			_, err := tc.c.Cert(ctx, req)
			var ae *api.Error
			if !asAPIError(err, &ae) {
				t.Fatalf("want API error, got %v", err)
			}
			if ae.Code != tc.code || ae.Status != tc.status || !strings.Contains(ae.Message, tc.contains) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", ae.Status, ae.Code, ae.Message, tc.status, tc.code, tc.contains)
			}
			if after := countCerts(t, w); after != before {
				t.Fatalf("a refused request wrote %d certificate records", after-before)
			}
		})
	}
	// RSA 2048+ is accepted.
	if _, err := w.alice.Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: rsaPub(2048)}); err != nil {
		t.Fatalf("RSA 2048: %v", err)
	}
}

func TestBadHTTPInput(t *testing.T) {
	w := newWorld(t, catest.Options{})
	hc := pinnedHTTP(t, w)
	tok := w.ca.Login(t, "alice", pw, "")
	big := `{"tier":"staging","public_key":"` + strings.Repeat("A", api.MaxBodyBytes) + `"}`
	cases := []struct {
		name, method, path, body, ctype, auth string
		status                                int
		contains                              string
	}{
		{"malformed json", "POST", api.PathCert, `{"tier":`, "application/json", "Bearer " + tok, 400, "malformed"},
		{"unknown field", "POST", api.PathCert, `{"tier":"staging","admin":true}`, "application/json", "Bearer " + tok, 400, "unknown field"},
		{"trailing data", "POST", api.PathCert, `{"tier":"staging"}{}`, "application/json", "Bearer " + tok, 400, "trailing"},
		{"oversized", "POST", api.PathCert, big, "application/json", "Bearer " + tok, 413, "larger"},
		{"wrong content type", "POST", api.PathLogin, `{"user":"alice","password":"x"}`, "text/plain", "", 415, "application/json"},
		{"no session", "POST", api.PathCert, `{"tier":"staging"}`, "application/json", "", 401, "sshward login"},
		{"forged token", "POST", api.PathCert, `{"tier":"staging"}`, "application/json", "Bearer sws_" + strings.Repeat("x", 43), 401, "sshward login"},
		{"not a token", "GET", api.PathSession, ``, "", "Bearer hello", 401, "sshward login"},
		{"host route without host auth", "GET", api.PathHostRevoked + "staging", ``, "", "Bearer " + tok, 401, "host"},
		{"renew without host auth", "POST", api.PathHostRenew, `{}`, "application/json", "", 401, "host"},
		{"unknown path", "GET", "/v1/nothing", ``, "", "", 404, "no such"},
		{"krl unknown tier", "GET", api.PathKRL + "qa", ``, "", "", 404, "unknown tier"},
		{"join with bad token", "POST", api.PathHostJoin, `{"token":"swj_nope","public_key":"` + strings.TrimSpace(mustPub(t, w)) + `"}`, "application/json", "", 401, "join token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := countCerts(t, w)
			req, _ := http.NewRequest(tc.method, w.ca.URL+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body strings.Builder
			buf := make([]byte, 4096)
			for {
				n, err := resp.Body.Read(buf)
				body.Write(buf[:n])
				if err != nil {
					break
				}
			}
			if resp.StatusCode != tc.status || !strings.Contains(body.String(), tc.contains) {
				t.Fatalf("got %d %s, want %d containing %q", resp.StatusCode, body.String(), tc.status, tc.contains)
			}
			if countCerts(t, w) != before {
				t.Fatal("bad input wrote a certificate record")
			}
		})
	}
}

func TestExpiredSessionRefused(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	w := catest.New(t, catest.Options{Now: func() time.Time { return clock() }})
	w.AddUser(t, "alice", pw, []string{"engineers"}, false)
	tok := w.Login(t, "alice", pw, "")
	c := w.Client(t, tok)
	_, pub := keyPair(t, t.TempDir(), "k")
	if _, err := c.Cert(context.Background(), api.CertRequest{Tier: "staging", PublicKey: pub}); err != nil {
		t.Fatal(err)
	}
	later := now.Add(12*time.Hour + time.Second)
	clock = func() time.Time { return later }
	_, err := c.Cert(context.Background(), api.CertRequest{Tier: "staging", PublicKey: pub})
	if !api.IsCode(err, api.CodeUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired session: got %v", err)
	}
}

func TestWrongFingerprintRefused(t *testing.T) {
	w := catest.New(t, catest.Options{})
	bad := strings.Repeat("0", 64)
	c, err := client.New(client.Config{URL: w.URL, Fingerprint: bad})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Health(context.Background())
	if err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("wrong fingerprint: got %v", err)
	}
	if c.RootPEM() != nil {
		t.Fatal("client kept a root it did not verify")
	}
}
