package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/playback"
)

// reindex rebuilds DIR's store from the bucket of recordings.s3: every
// archived recording DIR lacks is imported (digest and signature checked),
// and search catches up when the server starts.
func reindex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("sshward-playback reindex --dir DIR [--json]")
	dir := fs.String("dir", "", "the server's directory (its config.yaml names the bucket); stop the server first")
	asJSON := fs.Bool("json", false, "print the counts as JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return cli.Usagef("--dir is required")
	}
	settings, err := playback.LoadSettings(*dir)
	if err != nil {
		return err
	}
	if settings.S3 == nil {
		return fmt.Errorf("%s/config.yaml has no recordings.s3: nothing to reindex from", *dir)
	}
	bucket, err := openObjects(ctx, settings.S3, nil)
	if err != nil {
		return err
	}
	st, err := openStopped(ctx, *dir, settings.Encryption)
	if err != nil {
		return err
	}
	defer st.Close()
	last := -1
	res, err := playback.Reindex(ctx, st, playback.EncryptObjects(bucket, settings.Encryption), func(done, total int) {
		if pct := done * 100 / max(total, 1); pct/10 != last/10 || done == total {
			last = pct
			fmt.Fprintf(stderr, "reindex: %d of %d recordings (%d%%)\n", done, total, pct)
		}
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(stdout, res)
	}
	fmt.Fprintf(stdout, "reindexed from %s: %d recordings in the bucket, %d imported, %d already here, %d refused (digest or signature)\n",
		settings.S3.Bucket, res.Objects, res.Imported, res.Present, res.Refused)
	return nil
}
