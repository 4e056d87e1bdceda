package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/user"

	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/store"
)

const purgeUsage = "sshward-playback purge --dir DIR --reason TEXT ID..."

// purge deletes recordings for good, with the server stopped: the cast and
// metadata files, the search index entries, then a compaction of the
// index files so that no free page keeps their text; each deletion is a
// "recording.purge" event in the playback audit log. Recordings are never
// rewritten: a recording that holds a secret (typed before the agent left
// hidden input out, or matching no redaction pattern) is purged whole.
func purge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet(purgeUsage)
	dir := fs.String("dir", "", "the playback server's directory")
	reason := fs.String("reason", "", "why the recordings are purged (kept in the audit log)")
	ids, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *dir == "":
		return cli.Usagef("--dir is required")
	case *reason == "":
		return cli.Usagef("--reason is required: the audit log keeps why a recording was purged")
	case len(ids) == 0:
		return cli.Usagef("name at least one session id")
	}
	// The bucket's copies go too (first), or a reindex would bring them back.
	settings, err := playback.LoadSettings(*dir)
	if err != nil {
		return err
	}
	bucket, err := openObjects(ctx, settings.S3, nil)
	if err != nil {
		return fmt.Errorf("purge: %w (the bucket's copies must go too)", err)
	}
	st, err := store.Open(ctx, store.Config{Dir: *dir})
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("the index in %s is in use: stop sshward-playback, purge, then start it again", *dir)
	}
	if err != nil {
		return err
	}
	actor := "admin"
	if u, err := user.Current(); err == nil {
		actor = "admin:" + u.Username
	}
	notFound := 0
	for _, id := range ids {
		if bucket != nil {
			if err := playback.DeleteArchived(ctx, bucket, id); err != nil {
				st.Close()
				return fmt.Errorf("purge %s from object storage: %w (nothing was deleted here; run purge again)", id, err)
			}
		}
		rec, err := st.Delete(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			fmt.Fprintf(stderr, "sshward-playback: no recording %s in %s\n", id, *dir)
			notFound++
			continue
		}
		if err != nil {
			st.Close()
			return fmt.Errorf("purge %s: %w", id, err)
		}
		ev := store.AuditEvent{Type: "recording.purge", Actor: actor, Subject: id, Outcome: "ok", Reason: *reason,
			Details: map[string]string{"tier": rec.Meta.Tier, "user": rec.Meta.Identity, "host": rec.Meta.Host, "sha256": rec.Meta.SHA256}}
		if _, err := st.AppendAudit(ctx, ev); err != nil {
			st.Close()
			return fmt.Errorf("purge %s: deleted, but the audit record failed: %w", id, err)
		}
		fmt.Fprintf(stdout, "purged %s (%s@%s, tier %s)\n", id, rec.Meta.Identity, rec.Meta.Host, rec.Meta.Tier)
	}
	if err := st.Close(); err != nil {
		return err
	}
	if err := store.Compact(ctx, *dir); err != nil {
		return fmt.Errorf("recordings deleted, but compacting the index failed (run purge again to retry): %w", err)
	}
	if notFound > 0 {
		return fmt.Errorf("%d of %d recordings were not found in %s", notFound, len(ids), *dir)
	}
	return nil
}
