package hostauth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// certSpec describes a certificate for hostKey; the zero value is a valid host
// certificate for web1.staging from t0-1m to t0+1h.
type certSpec struct {
	typ        uint32
	principals []string
	after      time.Time
	before     time.Time
	serial     uint64
	options    map[string]string
}

func issue(t testing.TB, ca ssh.Signer, key ssh.PublicKey, s certSpec) *ssh.Certificate {
	t.Helper()
	if s.typ == 0 {
		s.typ = ssh.HostCert
	}
	if s.principals == nil {
		s.principals = []string{"web1.staging", "web1"}
	}
	if s.after.IsZero() {
		s.after = t0.Add(-time.Minute)
	}
	if s.before.IsZero() {
		s.before = t0.Add(time.Hour)
	}
	if s.serial == 0 {
		s.serial = 42
	}
	c := &ssh.Certificate{
		Key: key, Serial: s.serial, CertType: s.typ, KeyId: "host web1.staging",
		ValidPrincipals: s.principals,
		ValidAfter:      uint64(s.after.Unix()), ValidBefore: uint64(s.before.Unix()),
		Permissions: ssh.Permissions{CriticalOptions: s.options},
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

// world is one host CA, one host key and the certificates the cases need.
type world struct {
	hostCA, otherCA, hostKey ssh.Signer
	cert                     *ssh.Certificate
}

func newWorld(t testing.TB) *world {
	w := &world{hostCA: newSigner(t), otherCA: newSigner(t), hostKey: newSigner(t)}
	w.cert = issue(t, w.hostCA, w.hostKey.PublicKey(), certSpec{})
	return w
}

func (w *world) verifier(now time.Time) *Verifier {
	return &Verifier{
		HostCAs:   func() []ssh.PublicKey { return []ssh.PublicKey{w.otherCA.PublicKey(), w.hostCA.PublicKey()} },
		IsRevoked: func(c *ssh.Certificate) bool { return c.Serial == 666 },
		Now:       func() time.Time { return now },
	}
}

const target = "https://ca.example.com:8443/v1/host/renew?tier=staging&x=a%20b%2Fc&y=%C3%BC"

// signed returns the request as the server sees it: signed on the client
// side with a full URL, re-read from its request line on the server side.
func signed(t testing.TB, method, url string, body []byte, cert *ssh.Certificate, key ssh.Signer, at time.Time) *http.Request {
	t.Helper()
	client, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := Sign(client, body, cert, key, at, rand.Reader); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return serverSide(client, method, body)
}

func serverSide(client *http.Request, method string, body []byte) *http.Request {
	server := httptest.NewRequest(method, client.URL.RequestURI(), bytes.NewReader(body))
	server.Header = client.Header.Clone()
	return server
}

// rawHeader builds a header by hand for cases Sign refuses to produce.
func rawHeader(certWire []byte, ts int64, nonce string, sig *ssh.Signature) string {
	return header{cert: certWire, ts: ts, nonce: nonce, sig: ssh.Marshal(sig)}.String()
}

func TestVerify(t *testing.T) {
	w := newWorld(t)
	body := []byte(`{"public_key":"ssh-ed25519 AAAA"}`)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaSigner, _ := ssh.NewSignerFromKey(rsaKey)
	rsaCert := issue(t, w.hostCA, rsaSigner.PublicKey(), certSpec{})
	nonce := "AAAAAAAAAAAAAAAAAAAAAA"

	// headerSignedBy signs the canonical string for the default request
	// with key, using algorithm when set, for cert.
	headerSignedBy := func(cert *ssh.Certificate, key ssh.Signer, algorithm string) string {
		data := signedData("POST", "/v1/host/renew?tier=staging&x=a%20b%2Fc&y=%C3%BC", t0.Unix(), nonce, body)
		var sig *ssh.Signature
		var err error
		if algorithm != "" {
			sig, err = key.(ssh.AlgorithmSigner).SignWithAlgorithm(rand.Reader, data, algorithm)
		} else {
			sig, err = key.Sign(rand.Reader, data)
		}
		if err != nil {
			t.Fatal(err)
		}
		return rawHeader(cert.Marshal(), t0.Unix(), nonce, sig)
	}
	withHeader := func(h ...string) func() *http.Request {
		return func() *http.Request {
			r := httptest.NewRequest("POST", "/v1/host/renew?tier=staging&x=a%20b%2Fc&y=%C3%BC", bytes.NewReader(body))
			for _, v := range h {
				r.Header.Add("Authorization", v)
			}
			return r
		}
	}
	good := func() *http.Request { return signed(t, "POST", target, body, w.cert, w.hostKey, t0) }
	withCert := func(c *ssh.Certificate, key ssh.Signer) func() *http.Request {
		return func() *http.Request { return signed(t, "POST", target, body, c, key, t0) }
	}
	tampered := *w.cert
	tampered.ValidPrincipals = []string{"ca.internal"}

	tests := []struct {
		name     string
		req      func() *http.Request
		body     []byte // what the server read; nil means body
		verifier func(*Verifier)
		want     error // nil: accepted
	}{
		{name: "happy path", req: good},
		{name: "rsa host key signs with rsa-sha2-512", req: withCert(rsaCert, rsaSigner)},
		{name: "missing header", req: withHeader(), want: ErrNoAuth},
		{name: "another scheme", req: withHeader("Bearer abc.def"), want: ErrNoAuth},
		{name: "garbage header", req: withHeader("SSHWard-Host garbage"), want: ErrMalformed},
		{name: "bad base64 cert", req: withHeader("SSHWard-Host cert=%%%, ts=1, nonce=" + nonce + ", sig=AAAA"), want: ErrMalformed},
		{name: "cert bytes not a key", req: withHeader("SSHWard-Host cert=AAAA, ts=" + fmt.Sprint(t0.Unix()) + ", nonce=" + nonce + ", sig=AAAA"), want: ErrMalformed},
		{name: "two headers", req: func() *http.Request {
			r := good()
			r.Header.Add("Authorization", r.Header.Get("Authorization"))
			return r
		}, want: ErrMalformed},
		{name: "user cert offered", req: withCert(issue(t, w.hostCA, w.hostKey.PublicKey(), certSpec{typ: ssh.UserCert}), w.hostKey), want: ErrNotHostCert},
		{name: "plain key offered", req: withHeader(func() string {
			data := signedData("POST", "/v1/host/renew?tier=staging&x=a%20b%2Fc&y=%C3%BC", t0.Unix(), nonce, body)
			sig, _ := w.hostKey.Sign(rand.Reader, data)
			return rawHeader(w.hostKey.PublicKey().Marshal(), t0.Unix(), nonce, sig)
		}()), want: ErrNotHostCert},
		{name: "host cert naming no host", req: withCert(issue(t, w.hostCA, w.hostKey.PublicKey(), certSpec{principals: []string{}}), w.hostKey), want: ErrNotHostCert},
		{name: "host cert with critical options", req: withCert(issue(t, w.hostCA, w.hostKey.PublicKey(), certSpec{options: map[string]string{"force-command": "x"}}), w.hostKey), want: ErrNotHostCert},
		{name: "wrong CA", req: withCert(issue(t, newSigner(t), w.hostKey.PublicKey(), certSpec{}), w.hostKey), want: ErrUnknownCA},
		{name: "no CAs configured", req: good, verifier: func(v *Verifier) { v.HostCAs = nil }, want: ErrUnknownCA},
		{name: "expired", req: withCert(issue(t, w.hostCA, w.hostKey.PublicKey(), certSpec{before: t0.Add(-time.Second)}), w.hostKey), want: ErrExpired},
		{name: "expires this second", req: withCert(issue(t, w.hostCA, w.hostKey.PublicKey(), certSpec{before: t0}), w.hostKey), want: ErrExpired},
		{name: "not yet valid", req: withCert(issue(t, w.hostCA, w.hostKey.PublicKey(), certSpec{after: t0.Add(time.Minute)}), w.hostKey), want: ErrExpired},
		{name: "revoked", req: withCert(issue(t, w.hostCA, w.hostKey.PublicKey(), certSpec{serial: 666}), w.hostKey), want: ErrRevoked},
		{name: "tampered body", req: good, body: []byte(`{"public_key":"ssh-ed25519 BBBB"}`), want: ErrBadSignature},
		{name: "empty body instead", req: good, body: []byte{}, want: ErrBadSignature},
		{name: "tampered path", req: func() *http.Request {
			r := good()
			r.URL.Path = "/v1/host/join"
			return r
		}, want: ErrBadSignature},
		{name: "tampered query", req: func() *http.Request {
			r := good()
			r.URL.RawQuery = "tier=production"
			return r
		}, want: ErrBadSignature},
		{name: "tampered method", req: func() *http.Request {
			r := good()
			r.Method = "PUT"
			return r
		}, want: ErrBadSignature},
		{name: "tampered cert", req: withHeader(headerSignedBy(&tampered, w.hostKey, "")), want: ErrBadSignature},
		{name: "signed by another key", req: withHeader(headerSignedBy(w.cert, newSigner(t), "")), want: ErrBadSignature},
		{name: "sha-1 rsa signature", req: withHeader(headerSignedBy(rsaCert, rsaSigner, ssh.KeyAlgoRSA)), want: ErrBadSignature},
		{name: "stale timestamp", req: func() *http.Request {
			return signed(t, "POST", target, body, w.cert, w.hostKey, t0.Add(-DefaultMaxSkew-time.Second))
		}, want: ErrStale},
		{name: "timestamp from the future", req: func() *http.Request {
			return signed(t, "POST", target, body, w.cert, w.hostKey, t0.Add(DefaultMaxSkew+time.Second))
		}, want: ErrStale},
		{name: "custom skew", req: func() *http.Request {
			return signed(t, "POST", target, body, w.cert, w.hostKey, t0.Add(-30*time.Second))
		}, verifier: func(v *Verifier) { v.MaxSkew = 10 * time.Second }, want: ErrStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := w.verifier(t0)
			if tt.verifier != nil {
				tt.verifier(v)
			}
			b := tt.body
			if b == nil {
				b = body
			}
			cert, err := v.Verify(tt.req(), b)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if cert == nil || cert.CertType != ssh.HostCert || cert.ValidPrincipals[0] != "web1.staging" {
					t.Fatalf("Verify returned %+v", cert)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if cert != nil {
				t.Fatal("a certificate returned with an error")
			}
			for _, other := range allErrors {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("err = %v also matches %v", err, other)
				}
			}
			if !strings.HasPrefix(err.Error(), "hostauth: verify") {
				t.Errorf("err %q lacks the package prefix", err)
			}
		})
	}
}

var allErrors = []error{ErrNoAuth, ErrMalformed, ErrNotHostCert, ErrUnknownCA, ErrExpired, ErrRevoked, ErrBadSignature, ErrStale, ErrReplay}

func TestReplay(t *testing.T) {
	w := newWorld(t)
	body := []byte("chunk")
	tests := []struct {
		name string
		seen func(v *Verifier) // nil: the default private cache
	}{
		{name: "default cache"},
		{name: "shared NonceCache", seen: func(v *Verifier) {
			v.Seen = (&NonceCache{Size: 100, Now: v.Now}).Seen
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := w.verifier(t0)
			if tt.seen != nil {
				tt.seen(v)
			}
			req := signed(t, "POST", target, body, w.cert, w.hostKey, t0)
			if _, err := v.Verify(req, body); err != nil {
				t.Fatalf("first: %v", err)
			}
			again := serverSide(req, "POST", body)
			if _, err := v.Verify(again, body); !errors.Is(err, ErrReplay) {
				t.Fatalf("replay: err = %v, want ErrReplay", err)
			}
			// A new signature (new nonce) for the same content is fine.
			if _, err := v.Verify(signed(t, "POST", target, body, w.cert, w.hostKey, t0), body); err != nil {
				t.Fatalf("fresh request: %v", err)
			}
		})
	}
	t.Run("rejected requests do not burn nonces", func(t *testing.T) {
		v := w.verifier(t0)
		req := signed(t, "POST", target, body, w.cert, w.hostKey, t0)
		if _, err := v.Verify(serverSide(req, "POST", body), []byte("tampered")); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("tampered: %v", err)
		}
		if _, err := v.Verify(req, body); err != nil {
			t.Fatalf("genuine request after a forged one with its nonce: %v", err)
		}
	})
}

func TestSignErrors(t *testing.T) {
	w := newWorld(t)
	req, _ := http.NewRequest("GET", target, nil)
	tests := []struct {
		name   string
		cert   *ssh.Certificate
		signer ssh.Signer
		rand   io.Reader
		want   string
	}{
		{"signer is not the cert's key", w.cert, newSigner(t), nil, "not the certificate's key"},
		{"nil cert", nil, w.hostKey, nil, "nil"},
		{"rand fails", w.cert, w.hostKey, bytes.NewReader(nil), "nonce"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Sign(req, nil, tt.cert, tt.signer, t0, tt.rand)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// A host certificate made by OpenSSH's ssh-keygen authenticates, and a real
// HTTP server built on Verify lets it in once per signature.
func TestOpenSSHHostCertOverHTTP(t *testing.T) {
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Fatal("ssh-keygen not found: install openssh-client")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(keygen, args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen %v: %v\n%s", args, err, out)
		}
	}
	run("-q", "-t", "ed25519", "-N", "", "-C", "host-ca", "-f", filepath.Join(dir, "host_ca"))
	run("-q", "-t", "ecdsa", "-N", "", "-f", filepath.Join(dir, "host_key"))
	run("-q", "-s", filepath.Join(dir, "host_ca"), "-h", "-I", "web1.staging", "-n", "web1.staging,10.0.0.5", "-V", "-5m:+1h", "-z", "7", filepath.Join(dir, "host_key.pub"))

	caPub := readPub(t, filepath.Join(dir, "host_ca.pub"))
	cert, ok := readPub(t, filepath.Join(dir, "host_key-cert.pub")).(*ssh.Certificate)
	if !ok {
		t.Fatal("ssh-keygen output is not a certificate")
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "host_key"))
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}

	v := &Verifier{HostCAs: func() []ssh.PublicKey { return []ssh.PublicKey{caPub} }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body", http.StatusBadRequest)
			return
		}
		c, err := v.Verify(r, body)
		if err != nil {
			// What a client sees says nothing about why.
			http.Error(w, "host authentication failed", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "hello %s serial %d, %d bytes", c.ValidPrincipals[0], c.Serial, len(body))
	}))
	defer srv.Close()

	body := []byte("asciicast chunk\n")
	req, err := http.NewRequest("PUT", srv.URL+"/v1/recordings/abc?offset=0&name=a%2Fb", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := Sign(req, body, cert, hostKey, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	send := func() (int, string) {
		t.Helper()
		r := req.Clone(req.Context())
		r.Body = io.NopCloser(bytes.NewReader(body))
		resp, err := srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, got := send(); code != 200 || got != "hello web1.staging serial 7, 16 bytes" {
		t.Fatalf("first request: %d %q", code, got)
	}
	if code, got := send(); code != http.StatusUnauthorized || !strings.Contains(got, "host authentication failed") {
		t.Fatalf("replayed request: %d %q", code, got)
	}
}

func readPub(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseHeader(t *testing.T) {
	const n = "0123456789abcdef_-AB"
	ok := "SSHWard-Host cert=AAAA, ts=1700000000, nonce=" + n + ", sig=AAAA"
	tests := []struct {
		name, in, want string // want: substring of the error, "" for success
	}{
		{"canonical", ok, ""},
		{"scheme any case, params any order, no spaces", "sshward-host sig=AAAA,nonce=" + n + ",ts=1700000000,cert=AAAA", ""},
		{"other scheme", "Basic dXNlcjpwYXNz", "not the SSHWard-Host scheme"},
		{"no params", "SSHWard-Host", "not key=value"},
		{"missing sig", "SSHWard-Host cert=AAAA, ts=1, nonce=" + n, "sig missing"},
		{"repeated ts", "SSHWard-Host cert=AAAA, ts=1, ts=2, nonce=" + n + ", sig=AAAA", "repeated"},
		{"unknown param", ok + ", realm=x", "unknown parameter"},
		{"leading zero ts", strings.Replace(ok, "ts=1700000000", "ts=01700000000", 1), "canonical"},
		{"signed ts", strings.Replace(ok, "ts=1700000000", "ts=+1700000000", 1), "canonical"},
		{"negative ts", strings.Replace(ok, "ts=1700000000", "ts=-1", 1), "canonical"},
		{"short nonce", strings.Replace(ok, n, "abc", 1), "length"},
		{"nonce with newline", strings.Replace(ok, n, "0123456789abcdef\nxyz", 1), "base64url"},
		{"unpadded base64", strings.Replace(ok, "cert=AAAA", "cert=AAA", 1), "cert"},
		{"empty value", strings.Replace(ok, "sig=AAAA", "sig=", 1), "key=value"},
		{"huge", "SSHWard-Host cert=" + strings.Repeat("A", maxHeaderLen), "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := parseHeader(tt.in)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("parseHeader: %v", err)
				}
				if h.ts != 1700000000 || h.nonce != n || len(h.cert) != 3 || len(h.sig) != 3 {
					t.Fatalf("parsed %+v", h)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// FuzzParseHeader: parseHeader never panics or reads unbounded input, and
// whatever it accepts formats back to a header that parses to the same value.
func FuzzParseHeader(f *testing.F) {
	f.Add("SSHWard-Host cert=AAAA, ts=1700000000, nonce=0123456789abcdef, sig=AAAA")
	f.Add("sshward-host sig=AA==,nonce=________________,ts=0,cert=AAAA")
	f.Add("Bearer x")
	f.Add("SSHWard-Host cert=, ts=1, ts=2")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHeader(s)
		if err != nil {
			return
		}
		again, err := parseHeader(h.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", h.String(), err)
		}
		if !bytes.Equal(again.cert, h.cert) || !bytes.Equal(again.sig, h.sig) || again.ts != h.ts || again.nonce != h.nonce {
			t.Fatalf("round trip changed %+v to %+v", h, again)
		}
		if strings.ContainsAny(h.nonce, "\n\r") {
			t.Fatalf("nonce %q carries a newline into the signed string", h.nonce)
		}
	})
}

// The header Sign writes is the documented one-liner.
func TestSignHeaderShape(t *testing.T) {
	w := newWorld(t)
	req, _ := http.NewRequest("GET", target, nil)
	if err := Sign(req, nil, w.cert, w.hostKey, t0, rand.Reader); err != nil {
		t.Fatal(err)
	}
	got := req.Header.Get("Authorization")
	wantPrefix := "SSHWard-Host cert=" + base64.StdEncoding.EncodeToString(w.cert.Marshal()) + fmt.Sprintf(", ts=%d, nonce=", t0.Unix())
	if !strings.HasPrefix(got, wantPrefix) || !strings.Contains(got, ", sig=") {
		t.Fatalf("header %q", got)
	}
	h, err := parseHeader(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.nonce) != 22 {
		t.Errorf("nonce %q: want 22 base64url characters (128 bits)", h.nonce)
	}
}

func TestNonceCache(t *testing.T) {
	var mu sync.Mutex
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }

	c := &NonceCache{Size: 3, Now: clock}
	steps := []struct {
		name  string
		nonce string
		until time.Duration // from the current clock
		adv   time.Duration // advance the clock first
		seen  bool
		len   int
	}{
		{name: "new", nonce: "a", until: time.Minute, seen: false, len: 1},
		{name: "again", nonce: "a", until: time.Minute, seen: true, len: 1},
		{name: "second", nonce: "b", until: 2 * time.Minute, seen: false, len: 2},
		{name: "third", nonce: "c", until: 3 * time.Minute, seen: false, len: 3},
		{name: "full: fail closed", nonce: "d", until: time.Minute, seen: true, len: 3},
		{name: "a expired, room again", nonce: "d", until: time.Minute, adv: time.Minute, seen: false, len: 3},
		{name: "expired a is new again", nonce: "e", until: time.Minute, adv: time.Hour, seen: false, len: 1},
		{name: "already stale is not kept", nonce: "f", until: -time.Second, seen: false, len: 1},
		{name: "stale one still unknown", nonce: "f", until: time.Minute, seen: false, len: 2},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			advance(s.adv)
			if got := c.Seen(s.nonce, clock().Add(s.until)); got != s.seen {
				t.Fatalf("Seen(%q) = %v, want %v", s.nonce, got, s.seen)
			}
			if got := c.Len(); got != s.len {
				t.Fatalf("Len = %d, want %d", got, s.len)
			}
		})
	}

	t.Run("NewNonceCache bounds the size on the real clock", func(t *testing.T) {
		c := NewNonceCache(1)
		until := time.Now().Add(time.Minute)
		if c.Seen("a", until) || !c.Seen("b", until) || c.Len() != 1 {
			t.Fatal("NewNonceCache(1) did not hold exactly one nonce")
		}
	})

	t.Run("concurrent: each nonce accepted exactly once", func(t *testing.T) {
		c := &NonceCache{Now: clock}
		var wg sync.WaitGroup
		var mu sync.Mutex
		fresh := map[string]int{}
		for g := 0; g < 8; g++ {
			wg.Go(func() {
				for i := 0; i < 200; i++ {
					n := fmt.Sprint(i)
					if !c.Seen(n, clock().Add(time.Minute)) {
						mu.Lock()
						fresh[n]++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		if len(fresh) != 200 {
			t.Fatalf("%d distinct nonces accepted, want 200", len(fresh))
		}
		for n, k := range fresh {
			if k != 1 {
				t.Fatalf("nonce %s accepted %d times", n, k)
			}
		}
	})
}
