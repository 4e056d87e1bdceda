package playback

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/tlsca"
)

// CA is what the playback server asks of the CA: who a session token
// belongs to, logins and logouts for the web UI, and the trust material
// (host CA keys).
type CA interface {
	Session(ctx context.Context, token string) (*api.SessionInfo, error)
	Login(ctx context.Context, req api.LoginRequest) (*api.LoginResponse, error)
	Logout(ctx context.Context, token string) error
	Trust(ctx context.Context) (*api.TrustResponse, error)
}

// CAClient is the CA over HTTPS, trusting the root saved at join.
type CAClient struct {
	base *client.Client // shares the transport and the replica state
}

// NewCAClient returns a client of the CA at caURL (or its replicas,
// comma-separated: it fails over between them) that verifies it with
// rootPEM.
func NewCAClient(caURL string, rootPEM []byte) (*CAClient, error) {
	tc, err := tlsca.ClientConfigFromPEM(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("playback: CA client: %w", err)
	}
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: tc, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 5 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
	base, err := client.New(client.Config{URL: caURL, HTTPClient: hc, Timeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("playback: CA client: %w", err)
	}
	return &CAClient{base: base}, nil
}

// client returns an API client carrying token; they share one transport
// and one view of which CA replica answers.
func (c *CAClient) client(token string) (*client.Client, error) {
	return c.base.WithToken(token), nil
}

// Session returns who token belongs to (GET /v1/session).
func (c *CAClient) Session(ctx context.Context, token string) (*api.SessionInfo, error) {
	cl, err := c.client(token)
	if err != nil {
		return nil, err
	}
	return cl.Session(ctx)
}

// Login logs a user in (POST /v1/login).
func (c *CAClient) Login(ctx context.Context, req api.LoginRequest) (*api.LoginResponse, error) {
	cl, err := c.client("")
	if err != nil {
		return nil, err
	}
	return cl.Login(ctx, req)
}

// Logout revokes token (DELETE /v1/session).
func (c *CAClient) Logout(ctx context.Context, token string) error {
	cl, err := c.client(token)
	if err != nil {
		return err
	}
	return cl.Logout(ctx)
}

// Trust fetches the CA's public keys (GET /v1/trust).
func (c *CAClient) Trust(ctx context.Context) (*api.TrustResponse, error) {
	cl, err := c.client("")
	if err != nil {
		return nil, err
	}
	return cl.Trust(ctx)
}

// Terminate asks the CA to end a live session with the reader's token
// (POST /v1/sessions/{id}/terminate): the CA decides by its policy.
func (c *CAClient) Terminate(ctx context.Context, token, id string, req api.TerminateRequest) (*api.TerminateResponse, error) {
	cl, err := c.client(token)
	if err != nil {
		return nil, err
	}
	return cl.Terminate(ctx, id, req)
}
