package client

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// Terminate ends the live session id (api.PathSessionsTerminate) with the
// client's token (a login session or a reader token).
func (c *Client) Terminate(ctx context.Context, id string, req api.TerminateRequest) (*api.TerminateResponse, error) {
	var out api.TerminateResponse
	path := strings.Replace(api.PathSessionsTerminate, "{id}", url.PathEscape(id), 1)
	if err := c.do(ctx, http.MethodPost, path, req, &out, authBearer); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReportFlag reports, as a host, a flag an agent raised
// (api.PathHostFlags); the CA audits it and its notifiers get it.
func (c *Client) ReportFlag(ctx context.Context, f api.FlagReport, cert *ssh.Certificate, signer ssh.Signer) error {
	var out struct{}
	return c.doHost(ctx, http.MethodPost, api.PathHostFlags, f, &out, cert, signer)
}
