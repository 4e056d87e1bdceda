package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// CreateRequest opens an access request for a tier that needs approvals.
func (c *Client) CreateRequest(ctx context.Context, req api.CreateRequest) (*api.AccessRequest, error) {
	var out api.AccessRequest
	if err := c.do(ctx, http.MethodPost, api.PathRequests, req, &out, authBearer); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListRequests lists the caller's requests (api.ScopeMine) or those the
// caller may decide on (api.ScopeApprovable), newest first; all includes
// finished ones.
func (c *Client) ListRequests(ctx context.Context, scope string, all bool) ([]api.AccessRequest, error) {
	q := url.Values{"scope": {scope}}
	if all {
		q.Set("all", strconv.FormatBool(all))
	}
	var out api.RequestList
	if err := c.do(ctx, http.MethodGet, api.PathRequests+"?"+q.Encode(), nil, &out, authBearer); err != nil {
		return nil, err
	}
	return out.Requests, nil
}

// GetRequest fetches one request.
func (c *Client) GetRequest(ctx context.Context, id string) (*api.AccessRequest, error) {
	var out api.AccessRequest
	if err := c.do(ctx, http.MethodGet, api.RequestPath(id, ""), nil, &out, authBearer); err != nil {
		return nil, err
	}
	return &out, nil
}

// ApproveRequest approves request id; reason may be empty.
func (c *Client) ApproveRequest(ctx context.Context, id, reason string) (*api.AccessRequest, error) {
	var out api.AccessRequest
	if err := c.do(ctx, http.MethodPost, api.RequestPath(id, "approve"), api.Decision{Reason: reason}, &out, authBearer); err != nil {
		return nil, err
	}
	return &out, nil
}

// DenyRequest denies (or, for its requester, withdraws) request id.
func (c *Client) DenyRequest(ctx context.Context, id, reason string) (*api.AccessRequest, error) {
	var out api.AccessRequest
	if err := c.do(ctx, http.MethodPost, api.RequestPath(id, "deny"), api.Decision{Reason: reason}, &out, authBearer); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReportRequestUsed tells the CA, as a host, that a session started with
// the single-use certificate serial bought with request id. Repeating it is
// harmless.
func (c *Client) ReportRequestUsed(ctx context.Context, id string, used api.RequestUsed, cert *ssh.Certificate, signer ssh.Signer) (*api.AccessRequest, error) {
	var out api.AccessRequest
	if err := c.doHost(ctx, http.MethodPost, api.RequestUsedPath(id), used, &out, cert, signer); err != nil {
		return nil, err
	}
	return &out, nil
}
