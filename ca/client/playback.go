package client

import (
	"context"
	"net/http"

	"github.com/sshward/sshward/ca/api"
)

// JoinPlayback trades a one-time playback join token for the playback
// server's TLS certificate (POST /v1/playback/join).
func (c *Client) JoinPlayback(ctx context.Context, req api.PlaybackJoinRequest) (*api.PlaybackJoinResponse, error) {
	var out api.PlaybackJoinResponse
	if err := c.do(ctx, http.MethodPost, api.PathPlaybackJoin, req, &out, authNone); err != nil {
		return nil, err
	}
	return &out, nil
}
