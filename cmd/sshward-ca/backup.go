package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"filippo.io/age"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/cmd/internal/backupfile"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// A backup is one file: a tar of the CA directory, with a consistent
// snapshot of the store in place of ca.db, encrypted with age to the CA
// passphrase (an scrypt recipient: `age -d` opens it too, with the same
// passphrase). The keys inside are encrypted with that passphrase anyway;
// the store (users, password hashes, certificates, audit log) is not,
// hence the outer encryption. The CA can keep serving meanwhile.

// backupSkip names what a backup leaves out of DIR: the live store (its
// snapshot goes in instead), the admin socket, locks and temporary files.
func backupSkip(rel string, d fs.DirEntry) bool {
	return rel == "ca.db" || rel == "admin.sock" || backupfile.Skip(rel, d)
}

type backupResult struct {
	File    string `json:"file"`
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"` // of the encrypted file
	Records int    `json:"audit_records"`
	Head    string `json:"audit_head"`
}

func (e *env) cmdBackup(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca backup --dir DIR --to FILE")
	dir := e.dirFlag(fs)
	to := fs.String("to", "", "backup file to write (0600; refused if it exists)")
	passFile := fs.String("passphrase-file", "", "file holding the CA passphrase (else $SSHWARD_CA_PASSPHRASE); the backup is encrypted with it")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *to == "" {
		return fmtUsage("backup needs --dir DIR and --to FILE")
	}
	l := layout{*dir}
	if err := l.check(); err != nil {
		return err
	}
	if cfg, err := loadConfig(l.config()); err == nil && cfg.Store.Etcd != nil {
		return errBackupEtcd
	}
	pass, err := e.passphrase(*passFile)
	if err != nil {
		return err
	}
	// Only the CA's own passphrase: the backup must open with what opens
	// its keys, and nobody should have to remember a second one.
	if _, err := openPassphraseCheck(ctx, l, pass); err != nil {
		return errors.New("the passphrase does not open the CA keys in " + *dir + ": give the CA's passphrase")
	}
	if _, err := os.Lstat(*to); err == nil {
		return fmt.Errorf("%s exists: pick a new file (a backup never overwrites)", *to)
	}
	rcp, err := age.NewScryptRecipient(string(pass))
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}

	res := backupResult{File: *to}
	if res.Bytes, err = backupfile.Create(*to, func(w io.Writer) error {
		return e.writeBackup(ctx, l, w, rcp, &res)
	}); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if *asJSON {
		return cli.JSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "backup written: %s (%d files, %.1f MiB, encrypted to the CA passphrase); audit chain: %d records, head %s\n",
		res.File, res.Files, float64(res.Bytes)/(1<<20), res.Records, shortHash(res.Head))
	return nil
}

func (e *env) writeBackup(ctx context.Context, l layout, w io.Writer, rcp age.Recipient, res *backupResult) error {
	enc, err := age.Encrypt(w, rcp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(enc)
	now := time.Now().UTC()

	// The store first, through the running CA when there is one.
	snap, err := os.CreateTemp("", "sshward-ca-snapshot-")
	if err != nil {
		return err
	}
	defer os.Remove(snap.Name())
	defer snap.Close()
	if err := e.withAdmin(ctx, l.dir, func(a admin) error {
		_, err := a.Backup(ctx, "operator", snap)
		return err
	}); err != nil {
		return err
	}
	// Check the snapshot before it goes in: a whole bbolt file whose
	// audit chain verifies.
	rep, err := store.VerifyFile(ctx, snap.Name())
	if err != nil {
		return fmt.Errorf("the store snapshot does not verify: %w", err)
	}
	res.Records, res.Head = rep.Records, rep.Head
	if err := backupfile.AddFile(tw, "ca.db", snap, 0o600, now); err != nil {
		return err
	}
	res.Files++

	n, err := backupfile.AddDir(tw, l.dir, backupSkip)
	res.Files += n
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return enc.Close()
}

type restoreResult struct {
	Dir     string `json:"dir"`
	Files   int    `json:"files"`
	Records int    `json:"audit_records"`
	Head    string `json:"audit_head"`
}

func (e *env) cmdRestore(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca restore --from FILE --dir DIR")
	dir := fs.String("dir", "", "directory to restore into (new or empty; created 0700)")
	from := fs.String("from", "", "backup file written by sshward-ca backup")
	passFile := fs.String("passphrase-file", "", "file holding the CA passphrase (else $SSHWARD_CA_PASSPHRASE)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *from == "" {
		return fmtUsage("restore needs --from FILE and --dir DIR")
	}
	if err := backupfile.EmptyTarget(*dir); err != nil {
		return err
	}
	pass, err := e.passphrase(*passFile)
	if err != nil {
		return err
	}
	res := restoreResult{Dir: *dir}
	res.Files, err = backupfile.Restore(*from, *dir, pass, "sshward-ca", func(work string) error {
		l := layout{work}
		if err := l.check(); err != nil {
			return fmt.Errorf("restore from %s: the backup does not hold a CA: %w", *from, err)
		}
		rep, err := store.VerifyFile(ctx, l.db())
		if err != nil {
			return fmt.Errorf("restore from %s: the store in the backup does not verify: %w (nothing was restored)", *from, err)
		}
		res.Records, res.Head = rep.Records, rep.Head
		if _, err := openPassphraseCheck(ctx, l, pass); err != nil {
			return fmt.Errorf("restore from %s: the passphrase does not open the restored CA keys: %w", *from, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "restored %d files into %s; audit chain intact: %d records, head %s\n", res.Files, res.Dir, res.Records, shortHash(res.Head))
	return nil
}
