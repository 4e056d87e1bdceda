package playback

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/tlsca"
)

// Files of the server's identity in its directory. The key never leaves
// the machine; the rest is public.
const (
	keyFile    = "tls.key"     // ECDSA P-256, PKCS #8 PEM, 0600
	certFile   = "tls.crt"     // leaf issued by the CA's root
	rootFile   = "root.pem"    // the CA's internal root
	hostCAFile = "host_ca.pub" // host CA keys, authorized_keys lines
	joinFile   = "join.json"   // CA URL, advertised URL, names
)

// Identity is what joining the CA gave the server: its TLS certificate
// (from the CA's root, so agents and clients verify it with the root they
// pin), the root, the host CA keys that sign agents' certificates, and
// where the CA is. HostCAs may be replaced while serving (trust refresh).
type Identity struct {
	Dir         string
	CAURL       string
	URL         string // advertised URL, registered with the CA
	Names       []string
	Certificate tls.Certificate // leaf + root, with the private key
	Leaf        *x509.Certificate
	RootPEM     []byte

	mu      sync.RWMutex // guards hostCAs
	hostCAs []ssh.PublicKey
}

// joinState is join.json.
type joinState struct {
	CAURL       string    `json:"ca_url"`
	URL         string    `json:"url"`
	Names       []string  `json:"names"`
	JoinedAt    time.Time `json:"joined_at"`
	ValidBefore time.Time `json:"valid_before"`
}

// HostCAs returns the host CA keys agents' certificates must chain to.
func (id *Identity) HostCAs() []ssh.PublicKey {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.hostCAs
}

// SetHostCAs replaces the host CA keys (authorized_keys lines) and saves
// them, so a restart without the CA keeps verifying agents.
func (id *Identity) SetHostCAs(lines []string) error {
	keys, err := parseHostCAs(lines)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(id.Dir, hostCAFile), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("playback: save host CA keys: %w", err)
	}
	id.mu.Lock()
	id.hostCAs = keys
	id.mu.Unlock()
	return nil
}

func parseHostCAs(lines []string) ([]ssh.PublicKey, error) {
	var keys []ssh.PublicKey
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l))
		if err != nil {
			return nil, fmt.Errorf("playback: host CA key %q: %w", truncate(l, 40), err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("playback: no host CA key")
	}
	return keys, nil
}

// JoinConfig is what joining needs.
type JoinConfig struct {
	Dir         string
	CAURL       string // https URL of the CA
	Fingerprint string // hex SHA-256 of the CA's root (bootstrap pin)
	Token       string // one-time token from sshward-ca join-token --playback NAME
	URL         string // the https URL to advertise
	Names       []string
	Rand        io.Reader
	// HTTPClient overrides the transport to the CA (tests).
	HTTPClient *http.Client
}

// Check names the first missing field.
func (c *JoinConfig) Check() error {
	switch {
	case c.Dir == "":
		return errors.New("playback: join: Dir is required")
	case c.CAURL == "":
		return errors.New("playback: join: the CA URL (--ca) is required")
	case c.Fingerprint == "" && c.HTTPClient == nil:
		return errors.New("playback: join: the CA root fingerprint (--fingerprint) is required")
	case c.Token == "":
		return errors.New("playback: join: a join token is required for the first start: make one with sshward-ca join-token --playback NAME and pass --join-token")
	case c.URL == "":
		return errors.New("playback: join: the advertised URL is required")
	}
	return nil
}

// Join joins the CA with a one-time token: it makes a key (kept in Dir,
// 0600), asks the CA for a certificate for the advertised names, and saves
// the certificate, the CA root, the host CA keys and where the CA is.
func Join(ctx context.Context, cfg JoinConfig) (*Identity, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("playback: join: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("playback: join: key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("playback: join: %w", err)
	}
	cl, err := client.New(client.Config{URL: cfg.CAURL, Fingerprint: cfg.Fingerprint, HTTPClient: cfg.HTTPClient})
	if err != nil {
		return nil, fmt.Errorf("playback: join: %w", err)
	}
	resp, err := cl.JoinPlayback(ctx, api.PlaybackJoinRequest{
		Token: cfg.Token, URL: cfg.URL, Names: cfg.Names,
		PublicKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})),
	})
	if err != nil {
		return nil, fmt.Errorf("playback: join the CA at %s: %w", cfg.CAURL, err)
	}
	// The root must be the one the fingerprint pinned, not whatever the
	// answer says.
	if pinned := cl.RootPEM(); pinned != nil && string(pinned) != resp.RootPEM {
		return nil, errors.New("playback: join: the CA sent a root other than the one its fingerprint names")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("playback: join: %w", err)
	}
	u, _ := url.Parse(cfg.URL)
	names := cfg.Names
	if len(names) == 0 {
		names = []string{u.Hostname()}
	}
	state, _ := json.MarshalIndent(joinState{CAURL: cfg.CAURL, URL: strings.TrimRight(cfg.URL, "/"), Names: names,
		JoinedAt: time.Now().UTC(), ValidBefore: resp.ValidBefore}, "", "  ")
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{certFile, []byte(resp.CertificatePEM), 0o644},
		{rootFile, []byte(resp.RootPEM), 0o644},
		{hostCAFile, []byte(strings.Join(resp.HostCA, "\n") + "\n"), 0o644},
		{joinFile, append(state, '\n'), 0o644},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(cfg.Dir, f.name), f.data, f.perm); err != nil {
			return nil, fmt.Errorf("playback: join: save %s: %w", f.name, err)
		}
	}
	return LoadIdentity(cfg.Dir)
}

// LoadIdentity reads the identity Join saved.
func LoadIdentity(dir string) (*Identity, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotJoined
		}
		return b, err
	}
	if fi, err := os.Stat(filepath.Join(dir, keyFile)); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("playback: %s is readable by others (mode %s): chmod 600 it", filepath.Join(dir, keyFile), fi.Mode().Perm())
	}
	var raw [5][]byte
	for i, name := range []string{keyFile, certFile, rootFile, hostCAFile, joinFile} {
		b, err := read(name)
		if err != nil {
			return nil, fmt.Errorf("playback: load identity: %w", err)
		}
		raw[i] = b
	}
	if _, err := tlsca.ClientConfigFromPEM(raw[2]); err != nil { // a self-signed CA?
		return nil, fmt.Errorf("playback: load identity: %s: %w", rootFile, err)
	}
	rootBlock, _ := pem.Decode(raw[2])
	kp, err := tls.X509KeyPair(append(raw[1], raw[2]...), raw[0])
	if err != nil {
		return nil, fmt.Errorf("playback: load identity: %w", err)
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("playback: load identity: %w", err)
	}
	kp.Leaf = leaf
	if len(kp.Certificate) < 2 || rootBlock == nil || string(kp.Certificate[1]) != string(rootBlock.Bytes) {
		return nil, fmt.Errorf("playback: load identity: %s is not followed by its root", certFile)
	}
	var js joinState
	if err := json.Unmarshal(raw[4], &js); err != nil {
		return nil, fmt.Errorf("playback: load identity: %s: %w", joinFile, err)
	}
	keys, err := parseHostCAs(strings.Split(string(raw[3]), "\n"))
	if err != nil {
		return nil, err
	}
	return &Identity{Dir: dir, CAURL: js.CAURL, URL: js.URL, Names: js.Names, Certificate: kp, Leaf: leaf, RootPEM: raw[2], hostCAs: keys}, nil
}

// EnsureIdentity loads the saved identity, or joins when there is none,
// when it has expired (or expires within a day) and a token is given, or
// when a token is given for another advertised URL. Later starts need no
// token.
func EnsureIdentity(ctx context.Context, cfg JoinConfig, now time.Time) (*Identity, error) {
	id, err := LoadIdentity(cfg.Dir)
	switch {
	case errors.Is(err, ErrNotJoined):
		return Join(ctx, cfg)
	case err != nil:
		return nil, err
	case cfg.Token == "":
		if !now.Before(id.Leaf.NotAfter) {
			return nil, fmt.Errorf("playback: the TLS certificate expired at %s: join again with a new token (--join-token)", id.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return id, nil
	case now.Add(24*time.Hour).After(id.Leaf.NotAfter) || strings.TrimRight(cfg.URL, "/") != id.URL:
		if cfg.CAURL == "" {
			cfg.CAURL = id.CAURL
		}
		return Join(ctx, cfg)
	}
	return id, nil
}

// TLSConfig serves the identity's certificate with its root after it.
func (id *Identity) TLSConfig() *tls.Config {
	cert := id.Certificate
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
}

// DefaultURL is the URL to advertise for a listen address: the host given,
// else this machine's name.
func DefaultURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("playback: listen address %q: %w", listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		if host, err = os.Hostname(); err != nil {
			return "", fmt.Errorf("playback: no host name to advertise: pass --advertise: %w", err)
		}
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.tmp-%x", path, rnd)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
