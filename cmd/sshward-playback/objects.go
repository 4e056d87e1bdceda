package main

import (
	"context"
	"log/slog"

	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/objstore"
)

// openObjects opens the bucket of recordings.s3, or returns nil without
// one (objstore.OpenSettings).
func openObjects(ctx context.Context, s3 *playback.S3Settings, log *slog.Logger) (*objstore.Bucket, error) {
	return objstore.OpenSettings(ctx, s3, "recordings.s3", log)
}
