package tlsca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/keys"
)

// Making or opening a root costs 600,000 PBKDF2 rounds (~1 s under -race), so
// tests share two roots.
var (
	rootsOnce    sync.Once
	rootsDir     string
	rootA, rootB *Root
	rootsErr     error
)

const rootPass = "root passphrase"

func TestMain(m *testing.M) {
	code := m.Run()
	if rootsDir != "" {
		os.RemoveAll(rootsDir)
	}
	os.Exit(code)
}

func roots(t *testing.T) (a, b *Root) {
	t.Helper()
	rootsOnce.Do(func() {
		if rootsDir, rootsErr = os.MkdirTemp("", "tlsca-roots-"); rootsErr != nil {
			return
		}
		var wg sync.WaitGroup
		var errA, errB error
		wg.Go(func() {
			rootA, errA = CreateRoot(context.Background(), filepath.Join(rootsDir, "a"), []byte(rootPass), "root A", time.Now())
		})
		wg.Go(func() {
			rootB, errB = CreateRoot(context.Background(), filepath.Join(rootsDir, "b"), []byte(rootPass), "root B", time.Now())
		})
		wg.Wait()
		rootsErr = errors.Join(errA, errB)
	})
	if rootsErr != nil {
		t.Fatalf("test roots: %v", rootsErr)
	}
	return rootA, rootB
}

func TestCreateLoadRoot(t *testing.T) {
	a, _ := roots(t)
	dir := filepath.Join(rootsDir, "a")
	now := time.Now()

	c := a.Cert()
	if !c.IsCA || !c.BasicConstraintsValid || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Errorf("root constraints: IsCA=%v valid=%v maxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if c.Subject.CommonName != "root A" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || c.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("root key is %T, want ECDSA P-256", c.PublicKey)
	}
	if life := c.NotAfter.Sub(now); life < RootValidity-time.Hour || life > RootValidity {
		t.Errorf("root lifetime %s, want ~10y", life)
	}
	assertMode(t, filepath.Join(dir, "root.crt"), 0o644)
	assertMode(t, filepath.Join(dir, "root.key"), 0o600)
	if _, err := os.Stat(filepath.Join(dir, "root.pub")); !os.IsNotExist(err) {
		t.Errorf("root.pub written for an X.509-only key (err %v)", err)
	}

	fp := a.Fingerprint()
	if len(fp) != 64 || strings.ToLower(fp) != fp {
		t.Fatalf("fingerprint %q is not 64 lowercase hex digits", fp)
	}
	t.Run("openssl agrees on the fingerprint", func(t *testing.T) {
		out := runOpenSSL(t, "x509", "-in", filepath.Join(dir, "root.crt"), "-noout", "-fingerprint", "-sha256")
		_, got, _ := strings.Cut(strings.TrimSpace(out), "=")
		if n, err := normalizeFingerprint(got); err != nil || n != fp {
			t.Fatalf("openssl says %q, we say %q", got, fp)
		}
	})

	t.Run("LoadRootCert needs no passphrase", func(t *testing.T) {
		c, err := LoadRootCert(dir)
		if err != nil {
			t.Fatal(err)
		}
		if Fingerprint(c) != fp {
			t.Fatalf("loaded fingerprint %s, want %s", Fingerprint(c), fp)
		}
	})
	t.Run("LoadRoot", func(t *testing.T) {
		t.Parallel()
		r, err := LoadRoot(context.Background(), dir, []byte(rootPass))
		if err != nil {
			t.Fatal(err)
		}
		if r.Fingerprint() != fp {
			t.Fatalf("loaded fingerprint %s, want %s", r.Fingerprint(), fp)
		}
		// The loaded key really is the root's: what it issues verifies.
		leaf := issue(t, r, []string{"localhost"}, time.Hour, time.Now())
		verifyLeaf(t, leaf, a.Cert(), "localhost", time.Now())
	})
	t.Run("LoadRoot wrong passphrase", func(t *testing.T) {
		t.Parallel()
		_, err := LoadRoot(context.Background(), dir, []byte("nope"))
		if !errors.Is(err, keys.ErrBadPassphrase) {
			t.Fatalf("err = %v, want keys.ErrBadPassphrase", err)
		}
	})
	t.Run("CreateRoot refuses an existing root", func(t *testing.T) {
		before, _ := os.ReadFile(filepath.Join(dir, "root.crt"))
		_, err := CreateRoot(context.Background(), dir, []byte(rootPass), "again", now)
		if !errors.Is(err, ErrExists) {
			t.Fatalf("err = %v, want ErrExists", err)
		}
		after, _ := os.ReadFile(filepath.Join(dir, "root.crt"))
		if string(before) != string(after) {
			t.Fatal("root.crt changed")
		}
	})
	t.Run("CreateRoot refuses a stray root.key", func(t *testing.T) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, "root.key"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := CreateRoot(context.Background(), d, []byte(rootPass), "", now); !errors.Is(err, ErrExists) {
			t.Fatalf("err = %v, want ErrExists", err)
		}
		if _, err := os.Stat(filepath.Join(d, "root.crt")); !os.IsNotExist(err) {
			t.Fatal("root.crt written next to a refused key")
		}
	})
	t.Run("LoadRoot refuses a key of another root", func(t *testing.T) {
		d := t.TempDir()
		copyFile(t, filepath.Join(dir, "root.crt"), filepath.Join(d, "root.crt"), 0o644)
		copyFile(t, filepath.Join(rootsDir, "b", "root.key"), filepath.Join(d, "root.key"), 0o600)
		_, err := LoadRoot(context.Background(), d, []byte(rootPass))
		if err == nil || !strings.Contains(err.Error(), "does not belong") {
			t.Fatalf("err = %v, want a key/cert mismatch", err)
		}
	})
}

func TestIssueServer(t *testing.T) {
	a, _ := roots(t)
	now := time.Now()
	names := []string{"ca.example.com", "localhost", "127.0.0.1", "::1"}
	leaf := issue(t, a, names, 24*time.Hour, now)

	if got := strings.Join(leaf.DNSNames, ","); got != "ca.example.com,localhost" {
		t.Errorf("DNSNames = %s", got)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v", leaf.IPAddresses)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.IsCA {
		t.Errorf("EKU = %v, IsCA = %v; want serverAuth only, not a CA", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if !leaf.NotBefore.Equal(now.Add(-time.Minute).Truncate(time.Second)) || !leaf.NotAfter.Equal(now.Add(24*time.Hour).Truncate(time.Second)) {
		t.Errorf("validity %s .. %s, want now-1m .. now+24h", leaf.NotBefore, leaf.NotAfter)
	}
	for _, n := range names {
		verifyLeaf(t, leaf, a.Cert(), n, now)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(a.Cert()), DNSName: "other.example.com", CurrentTime: now}); err == nil {
		t.Error("leaf verifies for a name it was not issued for")
	}

	t.Run("openssl verify", func(t *testing.T) {
		d := t.TempDir()
		leafPath := filepath.Join(d, "leaf.pem")
		if err := os.WriteFile(leafPath, EncodePEM(leaf), 0o644); err != nil {
			t.Fatal(err)
		}
		out := runOpenSSL(t, "verify", "-CAfile", filepath.Join(rootsDir, "a", "root.crt"), "-purpose", "sslserver", leafPath)
		if !strings.Contains(out, ": OK") {
			t.Fatalf("openssl verify: %s", out)
		}
	})

	t.Run("capped at the root's expiry", func(t *testing.T) {
		late := a.Cert().NotAfter.Add(-time.Hour)
		l := issue(t, a, []string{"localhost"}, 24*time.Hour, late)
		if !l.NotAfter.Equal(a.Cert().NotAfter) {
			t.Fatalf("NotAfter = %s, want the root's %s", l.NotAfter, a.Cert().NotAfter)
		}
	})

	key := newKey(t)
	bad := []struct {
		name  string
		names []string
		ttl   time.Duration
		now   time.Time
		want  string
	}{
		{"no names", nil, time.Hour, now, "no names"},
		{"space in name", []string{"bad name"}, time.Hour, now, "not a DNS name"},
		{"empty label", []string{"a..b"}, time.Hour, now, "not a DNS name"},
		{"zero ttl", []string{"localhost"}, 0, now, "ttl"},
		{"root expired", []string{"localhost"}, time.Hour, a.Cert().NotAfter.Add(time.Second), "root expired"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.IssueServer(tt.names, key.Public(), tt.ttl, tt.now)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "tlsca: ") {
				t.Fatalf("err = %v, want a tlsca error about %q", err, tt.want)
			}
		})
	}
}

// fakeClock is a settable clock for ServerTLSConfig.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time           { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration)      { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }
func (c *fakeClock) Set(t time.Time)          { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func serial(c *tls.Certificate) string        { return c.Leaf.SerialNumber.String() }
func hello() *tls.ClientHelloInfo             { return &tls.ClientHelloInfo{ServerName: "localhost"} }
func pool(c *x509.Certificate) *x509.CertPool { p := x509.NewCertPool(); p.AddCert(c); return p }

func TestLeafRemint(t *testing.T) {
	a, _ := roots(t)
	start := time.Now()
	clock := &fakeClock{t: start}
	cfg, err := a.ServerTLSConfig([]string{"localhost", "127.0.0.1"}, time.Hour, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	first, err := cfg.GetCertificate(hello())
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Certificate) != 2 || string(first.Certificate[1]) != string(a.Cert().Raw) {
		t.Fatal("chain is not leaf + root")
	}
	verifyLeaf(t, first.Leaf, a.Cert(), "127.0.0.1", start)

	steps := []struct {
		name   string
		at     time.Duration // since start
		remint bool
	}{
		{"fresh", 0, false},
		{"half way", 30 * time.Minute, false},
		{"just before a third is left", 40*time.Minute - time.Second, false},
		{"less than a third left", 41 * time.Minute, true},
		{"new leaf is kept", 70 * time.Minute, false},
		{"after the old leaf's expiry", 3 * time.Hour, true},
	}
	cur := first
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			clock.Set(start.Add(s.at))
			got, err := cfg.GetCertificate(hello())
			if err != nil {
				t.Fatal(err)
			}
			if reminted := serial(got) != serial(cur); reminted != s.remint {
				t.Fatalf("re-minted = %v, want %v", reminted, s.remint)
			}
			if s.remint {
				if got.PrivateKey.(*ecdsa.PrivateKey).Equal(cur.PrivateKey) {
					t.Error("re-minted leaf reuses the old key")
				}
				verifyLeaf(t, got.Leaf, a.Cert(), "localhost", clock.Now())
				if want := clock.Now().Add(time.Hour).Truncate(time.Second); !got.Leaf.NotAfter.Equal(want) {
					t.Errorf("NotAfter = %s, want %s", got.Leaf.NotAfter, want)
				}
			}
			cur = got
		})
	}

	t.Run("concurrent handshakes share one leaf", func(t *testing.T) {
		clock.Add(50 * time.Minute) // due: every caller must see the same new leaf
		var wg sync.WaitGroup
		serials := make([]string, 8)
		for i := range serials {
			wg.Go(func() {
				c, err := cfg.GetCertificate(hello())
				if err != nil {
					t.Error(err)
					return
				}
				serials[i] = serial(c)
			})
		}
		wg.Wait()
		for _, s := range serials {
			if s != serials[0] || s == serial(cur) {
				t.Fatalf("serials %v: want one new leaf for all", serials)
			}
		}
	})

	t.Run("bad config fails at start", func(t *testing.T) {
		if _, err := a.ServerTLSConfig(nil, time.Hour, nil); err == nil {
			t.Error("no names accepted")
		}
		if _, err := a.ServerTLSConfig([]string{"localhost"}, -time.Hour, nil); err == nil {
			t.Error("negative ttl accepted")
		}
	})
}

// A real HTTPS server on loopback with ServerTLSConfig, and clients that
// bootstrap by fingerprint.
func TestPinnedClient(t *testing.T) {
	a, b := roots(t)
	names := []string{"localhost", "127.0.0.1"}
	goodCfg := serverConfig(t, a, names)
	otherRootCfg := serverConfig(t, b, names)

	// A leaf from root B sent with root A appended: the pin matches a
	// certificate in the chain, but the leaf was not issued by it.
	leafKey := newKey(t)
	leafB := mustIssue(t, b, names, leafKey)
	splicedCfg := &tls.Config{Certificates: []tls.Certificate{{
		Certificate: [][]byte{leafB.Raw, a.Cert().Raw}, PrivateKey: leafKey, Leaf: leafB,
	}}}

	// A chain whose second certificate is a leaf, pinned by its fingerprint.
	leafA1, leafA2 := mustIssue(t, a, names, leafKey), mustIssue(t, a, []string{"other"}, newKey(t))
	notRootCfg := &tls.Config{Certificates: []tls.Certificate{{
		Certificate: [][]byte{leafA1.Raw, leafA2.Raw}, PrivateKey: leafKey, Leaf: leafA1,
	}}}

	servers := map[string]string{
		"good":       serve(t, goodCfg),
		"other root": serve(t, otherRootCfg),
		"spliced":    serve(t, splicedCfg),
		"not root":   serve(t, notRootCfg),
	}
	fpA, fpB := a.Fingerprint(), b.Fingerprint()
	colons := strings.ToUpper(fpA[:2])
	for i := 2; i < len(fpA); i += 2 {
		colons += ":" + strings.ToUpper(fpA[i:i+2])
	}

	tests := []struct {
		name   string
		server string
		host   string // "localhost" or "127.0.0.1"
		cfg    *tls.Config
		want   error  // nil: success
		text   string // substring of the error
	}{
		{name: "pinned root, by name", server: "good", host: "localhost", cfg: PinnedClientConfig(fpA)},
		{name: "pinned root, by IP with For", server: "good", host: "127.0.0.1", cfg: PinnedClientConfigFor(fpA, "127.0.0.1")},
		{name: "openssl-style pin", server: "good", host: "localhost", cfg: PinnedClientConfig(colons)},
		{name: "wrong pin", server: "good", host: "localhost", cfg: PinnedClientConfig(fpB), want: ErrFingerprintMismatch,
			text: "tlsca: server root fingerprint " + fpA + " does not match the pinned fingerprint " + fpB + ": check the --fingerprint value"},
		{name: "server with another root", server: "other root", host: "localhost", cfg: PinnedClientConfig(fpA), want: ErrFingerprintMismatch,
			text: "server root fingerprint " + fpB},
		{name: "pinned root spliced behind a foreign leaf", server: "spliced", host: "localhost", cfg: PinnedClientConfig(fpA),
			text: "does not verify against the pinned root"},
		{name: "pin names a leaf", server: "not root", host: "localhost", cfg: PinnedClientConfig(Fingerprint(leafA2)), want: ErrNotRoot},
		{name: "wrong host name", server: "good", host: "127.0.0.1", cfg: PinnedClientConfigFor(fpA, "evil.example.com"),
			text: "evil.example.com"},
		{name: "IP without a name", server: "good", host: "127.0.0.1", cfg: PinnedClientConfig(fpA), want: ErrNoServerName},
		{name: "malformed pin", server: "good", host: "localhost", cfg: PinnedClientConfig("abc123"), want: ErrBadFingerprint},
		{name: "saved root", server: "good", host: "127.0.0.1", cfg: mustClientConfig(t, EncodePEM(a.Cert()))},
		{name: "saved root of another CA", server: "good", host: "localhost", cfg: mustClientConfig(t, EncodePEM(b.Cert())),
			text: "certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := "https://" + net.JoinHostPort(tt.host, servers[tt.server]) + "/healthz"
			resp, err := get(url, tt.cfg)
			if tt.want == nil && tt.text == "" {
				if err != nil {
					t.Fatalf("GET: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "ok" {
					t.Fatalf("body %q", body)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatal("GET succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("err = %v, want it to contain %q", err, tt.text)
			}
		})
	}

	t.Run("bootstrap then keep the root", func(t *testing.T) {
		resp, err := get("https://localhost:"+servers["good"]+"/healthz", PinnedClientConfig(fpA))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		root, err := PinnedRoot(*resp.TLS, fpA)
		if err != nil {
			t.Fatal(err)
		}
		if Fingerprint(root) != fpA {
			t.Fatal("PinnedRoot returned another certificate")
		}
		if _, err := PinnedRoot(*resp.TLS, fpB); !errors.Is(err, ErrFingerprintMismatch) {
			t.Fatalf("PinnedRoot with the wrong pin: %v", err)
		}
		cfg, err := ClientConfigFromPEM(EncodePEM(root))
		if err != nil {
			t.Fatal(err)
		}
		resp, err = get("https://localhost:"+servers["good"]+"/healthz", cfg)
		if err != nil {
			t.Fatalf("GET with the saved root: %v", err)
		}
		resp.Body.Close()
	})
}

func TestClientConfigFromPEMErrors(t *testing.T) {
	a, _ := roots(t)
	leaf := mustIssue(t, a, []string{"localhost"}, newKey(t))
	tests := []struct {
		name string
		pem  []byte
		want string
	}{
		{"empty", nil, "no PEM certificate"},
		{"garbage", []byte("hello"), "no PEM certificate"},
		{"a key, not a cert", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "unexpected PEM block"},
		{"a leaf, not a root", EncodePEM(leaf), "not a self-signed ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ClientConfigFromPEM(tt.pem); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func FuzzClientConfigFromPEM(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("not pem"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ClientConfigFromPEM(data)
		if err == nil && (cfg.RootCAs == nil || cfg.MinVersion != tls.VersionTLS12) {
			t.Fatal("accepted PEM without a root pool")
		}
	})
}

// FuzzNormalizeFingerprint: any 32 bytes, written in hex in either case with
// or without colons, normalizes to the lowercase hex; anything else that
// normalizes is 64 lowercase hex digits.
func FuzzNormalizeFingerprint(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef"), "", true, false)
	f.Add([]byte("short"), "zz", false, true)
	f.Fuzz(func(t *testing.T, raw []byte, junk string, upper, colons bool) {
		if got, err := normalizeFingerprint(junk); err == nil {
			if len(got) != 64 || strings.ToLower(got) != got {
				t.Fatalf("normalized %q to %q", junk, got)
			}
		}
		if len(raw) != 32 {
			return
		}
		want := fmt.Sprintf("%x", raw)
		in := want
		if colons {
			var parts []string
			for i := 0; i < len(want); i += 2 {
				parts = append(parts, want[i:i+2])
			}
			in = strings.Join(parts, ":")
		}
		if upper {
			in = strings.ToUpper(in)
		}
		if got, err := normalizeFingerprint(in); err != nil || got != want {
			t.Fatalf("normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	})
}

// --- helpers ---

func serverConfig(t *testing.T, r *Root, names []string) *tls.Config {
	t.Helper()
	cfg, err := r.ServerTLSConfig(names, time.Hour, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serve runs an HTTPS server on 127.0.0.1 and returns its port. The TLS
// listener is ours, not httptest's StartTLS: that one installs its own
// certificate, which a server without SNI (an IP client) would get instead of
// the GetCertificate leaf.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.Listener = tls.NewListener(srv.Listener, cfg)
	srv.Config.ErrorLog = nil
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return port
}

func get(url string, cfg *tls.Config) (*http.Response, error) {
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return c.Get(url)
}

func mustClientConfig(t *testing.T, pem []byte) *tls.Config {
	t.Helper()
	cfg, err := ClientConfigFromPEM(pem)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t *testing.T, r *Root, names []string, ttl time.Duration, now time.Time) *x509.Certificate {
	t.Helper()
	c, err := r.IssueServer(names, newKey(t).Public(), ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustIssue(t *testing.T, r *Root, names []string, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	c, err := r.IssueServer(names, key.Public(), time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verifyLeaf(t *testing.T, leaf, root *x509.Certificate, name string, at time.Time) {
	t.Helper()
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: pool(root), DNSName: name, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Fatalf("leaf does not verify for %s: %v", name, err)
	}
}

func runOpenSSL(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: install the openssl package")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode = %#o, want %#o", path, got, want)
	}
}

func copyFile(t *testing.T, from, to string, perm os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, perm); err != nil {
		t.Fatal(err)
	}
}
