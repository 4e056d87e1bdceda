package client

import (
	"context"
	"net/http"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// ClaimSingleUse claims, as a host, the single-use certificate serial
// before its session starts. A certificate claimed before (by any host)
// gives an *api.Error with code api.CodeAlreadyUsed.
func (c *Client) ClaimSingleUse(ctx context.Context, serial uint64, claim api.SingleUseClaim, cert *ssh.Certificate, signer ssh.Signer) (*api.SingleUseClaimed, error) {
	var out api.SingleUseClaimed
	if err := c.doHost(ctx, http.MethodPost, api.SingleUseClaimPath(serial), claim, &out, cert, signer); err != nil {
		return nil, err
	}
	return &out, nil
}
