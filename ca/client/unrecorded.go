package client

import (
	"context"
	"net/http"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// ReportUnrecorded reports, as a host, a session of an open tier that runs
// unrecorded; the CA writes it to its audit log (api.EventSessionUnrecorded).
func (c *Client) ReportUnrecorded(ctx context.Context, ev api.UnrecordedSession, cert *ssh.Certificate, signer ssh.Signer) (*api.UnrecordedReceived, error) {
	var out api.UnrecordedReceived
	if err := c.doHost(ctx, http.MethodPost, api.PathHostUnrecorded, ev, &out, cert, signer); err != nil {
		return nil, err
	}
	return &out, nil
}
