// Package client is the HTTPS client of the CA's API, used by the sshward
// CLI, the host agent and the playback server. It never trusts on first use:
// the first connection pins the CA's X.509 root by its SHA-256 fingerprint
// (or uses a root PEM saved by an earlier bootstrap).
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/ca/tlsca"
)

// Config configures a Client. Exactly one of Fingerprint or RootPEM is needed
// unless HTTPClient is set.
type Config struct {
	// URL is the CA's base URL, e.g. https://ca.example.com:8443.
	URL string
	// Fingerprint is the hex SHA-256 of the CA's X.509 root (bootstrap).
	Fingerprint string
	// RootPEM is the CA root saved by an earlier bootstrap.
	RootPEM []byte
	// Token is the CA session token sent as a Bearer credential.
	Token string
	// HTTPClient overrides the transport (tests, unix sockets).
	HTTPClient *http.Client
	// Timeout bounds each request (default 30s).
	Timeout time.Duration
	// Now is the clock used for host-auth signatures (default time.Now).
	Now func() time.Time
}

// Check names the first bad field.
func (c *Config) Check() error {
	if c.URL == "" {
		return errors.New("client: URL is required")
	}
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("client: URL %q is not a valid URL", c.URL)
	}
	if c.HTTPClient == nil {
		if u.Scheme != "https" {
			return fmt.Errorf("client: URL %q must use https", c.URL)
		}
		if c.Fingerprint == "" && len(c.RootPEM) == 0 {
			return errors.New("client: a root fingerprint (--fingerprint) is required to trust the CA")
		}
	}
	return nil
}

// Client talks to one CA.
type Client struct {
	cfg  Config
	base string
	hc   *http.Client

	mu   sync.Mutex // guards root
	root []byte     // PEM of the verified root, once known
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Client{cfg: cfg, base: strings.TrimRight(cfg.URL, "/"), root: cfg.RootPEM}
	if cfg.HTTPClient != nil {
		c.hc = cfg.HTTPClient
		return c, nil
	}
	var tc *tls.Config
	if len(cfg.RootPEM) > 0 {
		var err error
		if tc, err = tlsca.ClientConfigFromPEM(cfg.RootPEM); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	} else {
		u, _ := url.Parse(cfg.URL)
		tc = tlsca.PinnedClientConfigFor(cfg.Fingerprint, u.Hostname())
	}
	// Remember the root the server presented once the pin verified it, so
	// the CLI can save it and later runs need no fingerprint.
	verify := tc.VerifyConnection
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.root == nil && cfg.Fingerprint != "" {
			root, err := tlsca.PinnedRoot(cs, cfg.Fingerprint)
			if err != nil {
				return err
			}
			c.root = tlsca.EncodePEM(root)
		}
		return nil
	}
	tr := &http.Transport{
		TLSClientConfig:     tc,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	c.hc = &http.Client{Transport: tr}
	return c, nil
}

// RootPEM returns the CA root certificate verified during the first
// handshake (or given in Config), nil before any request.
func (c *Client) RootPEM() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.root
}

// SetToken replaces the session token used for Bearer requests.
func (c *Client) SetToken(tok string) { c.cfg.Token = tok }

// Health checks GET /healthz.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, api.PathHealth, nil, nil, authNone)
}

// Trust fetches the CA public keys and tier host patterns.
func (c *Client) Trust(ctx context.Context) (*api.TrustResponse, error) {
	var out api.TrustResponse
	if err := c.do(ctx, http.MethodGet, api.PathTrust, nil, &out, authNone); err != nil {
		return nil, err
	}
	return &out, nil
}

// KRL fetches the tier's OpenSSH KRL.
func (c *Client) KRL(ctx context.Context, tier string) ([]byte, error) {
	var out []byte
	if err := c.do(ctx, http.MethodGet, api.PathKRL+url.PathEscape(tier), nil, &out, authNone); err != nil {
		return nil, err
	}
	return out, nil
}

// Login logs a local user in.
func (c *Client) Login(ctx context.Context, req api.LoginRequest) (*api.LoginResponse, error) {
	var out api.LoginResponse
	if err := c.do(ctx, http.MethodPost, api.PathLogin, req, &out, authNone); err != nil {
		return nil, err
	}
	return &out, nil
}

// OIDCConfig fetches the identity provider settings.
func (c *Client) OIDCConfig(ctx context.Context) (*api.OIDCConfig, error) {
	var out api.OIDCConfig
	if err := c.do(ctx, http.MethodGet, api.PathLoginOIDC, nil, &out, authNone); err != nil {
		return nil, err
	}
	return &out, nil
}

// LoginOIDC exchanges an ID token for a CA session.
func (c *Client) LoginOIDC(ctx context.Context, idToken string) (*api.LoginResponse, error) {
	var out api.LoginResponse
	if err := c.do(ctx, http.MethodPost, api.PathLoginOIDC, api.OIDCLoginRequest{IDToken: idToken}, &out, authNone); err != nil {
		return nil, err
	}
	return &out, nil
}

// Session returns who the session token belongs to.
func (c *Client) Session(ctx context.Context) (*api.SessionInfo, error) {
	var out api.SessionInfo
	if err := c.do(ctx, http.MethodGet, api.PathSession, nil, &out, authBearer); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReaderToken exchanges the session for a short-lived token that can only
// read recordings (POST /v1/session/reader): what the playback server gets.
func (c *Client) ReaderToken(ctx context.Context) (*api.LoginResponse, error) {
	var out api.LoginResponse
	if err := c.do(ctx, http.MethodPost, api.PathReaderToken, struct{}{}, &out, authBearer); err != nil {
		return nil, err
	}
	return &out, nil
}

// Logout revokes the session token.
func (c *Client) Logout(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, api.PathSession, nil, nil, authBearer)
}

// Cert asks for a user certificate.
func (c *Client) Cert(ctx context.Context, req api.CertRequest) (*api.CertResponse, error) {
	var out api.CertResponse
	if err := c.do(ctx, http.MethodPost, api.PathCert, req, &out, authBearer); err != nil {
		return nil, err
	}
	return &out, nil
}

// Join exchanges a one-time join token for a host certificate.
func (c *Client) Join(ctx context.Context, req api.JoinRequest) (*api.HostCertResponse, error) {
	var out api.HostCertResponse
	if err := c.do(ctx, http.MethodPost, api.PathHostJoin, req, &out, authNone); err != nil {
		return nil, err
	}
	return &out, nil
}

// RenewHost renews a host certificate, authenticating with the current one.
func (c *Client) RenewHost(ctx context.Context, cert *ssh.Certificate, signer ssh.Signer, req api.RenewRequest) (*api.HostCertResponse, error) {
	var out api.HostCertResponse
	if err := c.doHost(ctx, http.MethodPost, api.PathHostRenew, req, &out, cert, signer); err != nil {
		return nil, err
	}
	return &out, nil
}

// HostRevoked fetches the revocation list a host of tier enforces.
func (c *Client) HostRevoked(ctx context.Context, tier string, cert *ssh.Certificate, signer ssh.Signer) (*api.RevocationList, error) {
	var out api.RevocationList
	if err := c.doHost(ctx, http.MethodGet, api.PathHostRevoked+url.PathEscape(tier), nil, &out, cert, signer); err != nil {
		return nil, err
	}
	return &out, nil
}

// Do sends an arbitrary JSON request with the session token; for verbs that
// live outside this package's typed methods (e.g. access requests).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, method, path, in, out, authBearer)
}

// DoHost sends a JSON request authenticated with a host certificate.
func (c *Client) DoHost(ctx context.Context, method, path string, in, out any, cert *ssh.Certificate, signer ssh.Signer) error {
	return c.doHost(ctx, method, path, in, out, cert, signer)
}

type authKind int

const (
	authNone authKind = iota
	authBearer
)

func (c *Client) do(ctx context.Context, method, path string, in, out any, auth authKind) error {
	req, _, err := c.newRequest(ctx, method, path, in)
	if err != nil {
		return err
	}
	if auth == authBearer {
		if c.cfg.Token == "" {
			return &api.Error{Code: api.CodeUnauthenticated, Message: "not logged in: run sshward login", Status: http.StatusUnauthorized}
		}
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	return c.roundTrip(req, out)
}

func (c *Client) doHost(ctx context.Context, method, path string, in, out any, cert *ssh.Certificate, signer ssh.Signer) error {
	req, body, err := c.newRequest(ctx, method, path, in)
	if err != nil {
		return err
	}
	if err := hostauth.Sign(req, body, cert, signer, c.cfg.Now(), rand.Reader); err != nil {
		return fmt.Errorf("client: sign request: %w", err)
	}
	return c.roundTrip(req, out)
}

func (c *Client) newRequest(ctx context.Context, method, path string, in any) (*http.Request, []byte, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return nil, nil, fmt.Errorf("client: encode %s %s: %w", method, path, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	// The cancel func is released when the body is consumed (see roundTrip).
	req = req.WithContext(context.WithValue(ctx, cancelKey{}, cancel))
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	return req, body, nil
}

type cancelKey struct{}

func (c *Client) roundTrip(req *http.Request, out any) error {
	if cancel, ok := req.Context().Value(cancelKey{}).(context.CancelFunc); ok {
		defer cancel()
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("client: read %s: %w", req.URL.Path, err)
	}
	if resp.StatusCode/100 != 2 {
		apiErr := &api.Error{Status: resp.StatusCode}
		if json.Unmarshal(data, apiErr) != nil || apiErr.Message == "" {
			apiErr.Code = api.CodeInternal
			apiErr.Message = fmt.Sprintf("the server answered %s", resp.Status)
		}
		return apiErr
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = data
		return nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("client: decode %s: %w", req.URL.Path, err)
		}
	}
	return nil
}
