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
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/ca/tlsca"
)

// Config configures a Client. Exactly one of Fingerprint or RootPEM is needed
// unless HTTPClient is set.
type Config struct {
	// URL is the CA's base URL, e.g. https://ca.example.com:8443, or the
	// URLs of its replicas, comma-separated (see failover.go).
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
	// ReplicaDownFor is how long a failed replica is tried only after the
	// others (default 30s); only with several URLs.
	ReplicaDownFor time.Duration
	// DialTimeout bounds the TCP connect and the TLS handshake to one
	// replica (default 5s), so a dead one is skipped quickly.
	DialTimeout time.Duration
	// Log receives replica failover notices (default: discarded).
	Log *slog.Logger
}

// Check names the first bad field.
func (c *Config) Check() error {
	if c.URL == "" {
		return errors.New("client: URL is required")
	}
	urls, err := SplitURLs(c.URL)
	if err != nil {
		return err
	}
	if c.HTTPClient == nil {
		for _, u := range urls {
			if !strings.HasPrefix(u, "https://") {
				return fmt.Errorf("client: URL %q must use https", u)
			}
		}
		if c.Fingerprint == "" && len(c.RootPEM) == 0 {
			return errors.New("client: a root fingerprint (--fingerprint) is required to trust the CA")
		}
	}
	return nil
}

// Client talks to one CA, served by one or several replicas (see
// failover.go).
type Client struct {
	cfg       Config
	eps       *endpoints
	rootState *rootState
}

// rootState is the CA root verified by the first handshake.
type rootState struct {
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
	if cfg.ReplicaDownFor == 0 {
		cfg.ReplicaDownFor = defaultReplicaDownFor
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	urls, _ := SplitURLs(cfg.URL)
	c := &Client{cfg: cfg, rootState: &rootState{root: cfg.RootPEM}}
	c.eps = &endpoints{downFor: cfg.ReplicaDownFor, now: cfg.Now, log: log, down: make([]time.Time, len(urls))}
	for _, u := range urls {
		hc := cfg.HTTPClient
		if hc == nil {
			var err error
			if hc, err = c.transportFor(u); err != nil {
				return nil, err
			}
		}
		c.eps.list = append(c.eps.list, &endpoint{base: u, hc: hc})
	}
	return c, nil
}

// transportFor builds the HTTPS client of one replica: it trusts the saved
// root, or the pinned fingerprint for the replica's own host name.
func (c *Client) transportFor(rawURL string) (*http.Client, error) {
	cfg := c.cfg
	var tc *tls.Config
	if len(cfg.RootPEM) > 0 {
		var err error
		if tc, err = tlsca.ClientConfigFromPEM(cfg.RootPEM); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	} else {
		u, _ := url.Parse(rawURL)
		tc = tlsca.PinnedClientConfigFor(cfg.Fingerprint, u.Hostname())
	}
	// Remember the root the server presented once the pin verified it, so
	// the CLI can save it and later runs need no fingerprint.
	verify := tc.VerifyConnection
	rs := c.rootState
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		rs.mu.Lock()
		defer rs.mu.Unlock()
		if rs.root == nil && cfg.Fingerprint != "" {
			root, err := tlsca.PinnedRoot(cs, cfg.Fingerprint)
			if err != nil {
				return err
			}
			rs.root = tlsca.EncodePEM(root)
		}
		return nil
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: cfg.DialTimeout,
		TLSClientConfig:     tc,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr}, nil
}

// RootPEM returns the CA root certificate verified during the first
// handshake (or given in Config), nil before any request.
func (c *Client) RootPEM() []byte {
	c.rootState.mu.Lock()
	defer c.rootState.mu.Unlock()
	return c.rootState.root
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

// WorkloadCert exchanges a CI platform's OIDC token for a short certificate
// (no session: the token is the credential).
func (c *Client) WorkloadCert(ctx context.Context, req api.WorkloadCertRequest) (*api.CertResponse, error) {
	var out api.CertResponse
	if err := c.do(ctx, http.MethodPost, api.PathWorkloadCert, req, &out, authNone); err != nil {
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
	if auth == authBearer && c.cfg.Token == "" {
		return &api.Error{Code: api.CodeUnauthenticated, Message: "not logged in: run sshward login", Status: http.StatusUnauthorized}
	}
	body, err := encodeBody(method, path, in)
	if err != nil {
		return err
	}
	return c.send(ctx, method, path, in != nil, body, out, func(req *http.Request) error {
		if auth == authBearer {
			req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
		}
		return nil
	})
}

func (c *Client) doHost(ctx context.Context, method, path string, in, out any, cert *ssh.Certificate, signer ssh.Signer) error {
	body, err := encodeBody(method, path, in)
	if err != nil {
		return err
	}
	// Each attempt is signed afresh (its own time and nonce).
	return c.send(ctx, method, path, in != nil, body, out, func(req *http.Request) error {
		if err := hostauth.Sign(req, body, cert, signer, c.cfg.Now(), rand.Reader); err != nil {
			return fmt.Errorf("client: sign request: %w", err)
		}
		return nil
	})
}

func encodeBody(method, path string, in any) ([]byte, error) {
	if in == nil {
		return nil, nil
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("client: encode %s %s: %w", method, path, err)
	}
	return body, nil
}

// send sends the request to the replicas in turn (see failover.go for what
// is retried) and decodes the first answer.
func (c *Client) send(ctx context.Context, method, path string, hasBody bool, body []byte, out any, prep func(*http.Request) error) error {
	order, list := c.eps.snapshot()
	var rerr replicaErr
	for n, i := range order {
		ep := list[i]
		last := n == len(order)-1
		actx, cancel := attemptCtx(ctx, c.cfg.Timeout)
		var written atomic.Bool
		actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{WroteRequest: func(w httptrace.WroteRequestInfo) {
			if w.Err == nil {
				written.Store(true)
			}
		}})
		req, err := http.NewRequestWithContext(actx, method, ep.base+path, bytes.NewReader(body))
		if err != nil {
			cancel()
			return fmt.Errorf("client: %s %s: %w", method, path, err)
		}
		if hasBody {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		if err := prep(req); err != nil {
			cancel()
			return err
		}
		resp, err := ep.hc.Do(req)
		if err != nil {
			cancel()
			err = fmt.Errorf("client: %s %s: %w", method, path, err)
			if ctx.Err() != nil || len(order) == 1 {
				return err
			}
			c.eps.fail(i, err)
			rerr.urls, rerr.errs = append(rerr.urls, ep.base), append(rerr.errs, err)
			// A request that may have reached the replica is replayed
			// only when replaying it is harmless.
			if written.Load() && !retryableMethod(method) {
				return fmt.Errorf("client: %s %s: the CA replica at %s may have received the request and gave no answer; it is not sent again to another replica: %w", method, path, ep.base, err)
			}
			continue
		}
		if !last && retryableStatus(resp.StatusCode) && retryableMethod(method) {
			resp.Body.Close()
			cancel()
			err := fmt.Errorf("client: %s %s: the replica answered %s", method, path, resp.Status)
			c.eps.fail(i, err)
			rerr.urls, rerr.errs = append(rerr.urls, ep.base), append(rerr.errs, err)
			continue
		}
		c.eps.good(i)
		err = decodeResponse(req, resp, out)
		cancel()
		return err
	}
	return fmt.Errorf("client: %s %s: %w", method, path, &rerr)
}

func decodeResponse(req *http.Request, resp *http.Response, out any) error {
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
