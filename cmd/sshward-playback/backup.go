package main

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"filippo.io/age"

	"github.com/sshward/sshward/cmd/internal/backupfile"
	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/playback/store"
)

// A playback backup is what an sshward-ca backup is (cmd/sshward-ca
// backup.go): a tar of DIR with consistent snapshots of the databases
// (index.db, search.db) in place of the live files, encrypted with age to
// a passphrase (scrypt; `age -d` opens it). It holds the TLS identity,
// config.yaml and the recordings kept in DIR.

const passEnv = "SSHWARD_PLAYBACK_BACKUP_PASSPHRASE"

func playbackBackupSkip(rel string, d fs.DirEntry) bool {
	return slices.Contains(store.SnapshotFiles, rel) || backupfile.Skip(rel, d)
}

type playbackBackupResult struct {
	File    string `json:"file"`
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"`
	Records uint64 `json:"audit_records"`
	Head    string `json:"audit_head"`
}

func backup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("sshward-playback backup --dir DIR --to FILE [--passphrase-file FILE] [--json]")
	dir := fs.String("dir", "", "the server's directory; stop the server first")
	to := fs.String("to", "", "backup file to write (0600; refused if it exists)")
	passFile := fs.String("passphrase-file", "", "file holding the passphrase the backup is encrypted with (else $"+passEnv+")")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *to == "" {
		return cli.Usagef("backup needs --dir DIR and --to FILE")
	}
	pass, err := backupfile.ReadPassphrase(os.Getenv(passEnv), *passFile, passEnv)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(*to); err == nil {
		return fmt.Errorf("%s exists: pick a new file (a backup never overwrites)", *to)
	}
	rcp, err := age.NewScryptRecipient(string(pass))
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	st, err := openStopped(ctx, *dir)
	if err != nil {
		return err
	}
	defer st.Close()
	rep, err := st.VerifyAudit(ctx)
	if err != nil {
		return fmt.Errorf("the audit log in %s does not verify, not backing it up: %w", *dir, err)
	}
	res := playbackBackupResult{File: *to, Records: rep.Events, Head: rep.Head}

	if res.Bytes, err = backupfile.Create(*to, func(w io.Writer) error {
		return writePlaybackBackup(ctx, st, *dir, w, rcp, &res)
	}); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if *asJSON {
		return cli.JSON(stdout, res)
	}
	fmt.Fprintf(stdout, "backup written: %s (%d files, %.1f MiB, encrypted to the passphrase); audit chain: %d records\n",
		res.File, res.Files, float64(res.Bytes)/(1<<20), res.Records)
	return nil
}

func writePlaybackBackup(ctx context.Context, st *store.Store, dir string, w io.Writer, rcp age.Recipient, res *playbackBackupResult) error {
	enc, err := age.Encrypt(w, rcp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(enc)
	now := time.Now().UTC()
	for _, name := range store.SnapshotFiles {
		snap, err := os.CreateTemp("", "sshward-playback-snapshot-")
		if err != nil {
			return err
		}
		_, err = st.WriteSnapshot(ctx, name, snap)
		if err == nil {
			err = backupfile.AddFile(tw, name, snap, 0o600, now)
		}
		snap.Close()
		os.Remove(snap.Name())
		if err != nil {
			return err
		}
		res.Files++
	}
	n, err := backupfile.AddDir(tw, dir, playbackBackupSkip)
	res.Files += n
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return enc.Close()
}

type playbackRestoreResult struct {
	Dir     string `json:"dir"`
	Files   int    `json:"files"`
	Records uint64 `json:"audit_records"`
	Head    string `json:"audit_head"`
}

func restore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("sshward-playback restore --from FILE --dir DIR [--passphrase-file FILE] [--json]")
	dir := fs.String("dir", "", "directory to restore into (new or empty)")
	from := fs.String("from", "", "backup file written by sshward-playback backup")
	passFile := fs.String("passphrase-file", "", "file holding the backup's passphrase (else $"+passEnv+")")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *from == "" {
		return cli.Usagef("restore needs --from FILE and --dir DIR")
	}
	if err := backupfile.EmptyTarget(*dir); err != nil {
		return err
	}
	pass, err := backupfile.ReadPassphrase(os.Getenv(passEnv), *passFile, passEnv)
	if err != nil {
		return err
	}
	res := playbackRestoreResult{Dir: *dir}
	res.Files, err = backupfile.Restore(*from, *dir, pass, "sshward-playback", func(work string) error {
		if _, err := os.Stat(filepath.Join(work, store.SnapshotFiles[0])); err != nil {
			return fmt.Errorf("restore from %s: the backup holds no playback index (nothing was restored)", *from)
		}
		st, err := store.Open(ctx, store.Config{Dir: work})
		if err != nil {
			return fmt.Errorf("restore from %s: %w (nothing was restored)", *from, err)
		}
		rep, err := st.VerifyAudit(ctx)
		if cerr := st.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("restore from %s: the audit log in the backup does not verify: %w (nothing was restored)", *from, err)
		}
		res.Records, res.Head = rep.Events, rep.Head
		return nil
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(stdout, res)
	}
	fmt.Fprintf(stdout, "restored %d files into %s; audit chain intact: %d records\n", res.Files, res.Dir, res.Records)
	return nil
}
