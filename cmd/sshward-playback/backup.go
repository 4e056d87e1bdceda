package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/sshward/sshward/cmd/internal/adminsock"
	"github.com/sshward/sshward/cmd/internal/backupfile"
	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/playback/store"
)

// A playback backup is what an sshward-ca backup is (cmd/sshward-ca
// backup.go): a tar of DIR with consistent copies of the store (index.db,
// search.db and the recordings under blobs/, playback/store.Backup) in
// place of the live files, encrypted with age to a passphrase (scrypt;
// `age -d` opens it). It holds the TLS identity and config.yaml too.
// While `serve` runs, the store's part comes from the server through its
// admin socket (DIR/admin.sock, mode 0600): the server keeps serving.

const passEnv = "SSHWARD_PLAYBACK_BACKUP_PASSPHRASE"

// Admin socket of sshward-playback serve.
const (
	adminSocket = "admin.sock"
	// adminBackup (GET) streams a tar of the store's part of a backup,
	// whose last entry is backupReportName.
	adminBackup = "/admin/backup"
	// backupReportName is the store.BackupReport (JSON) ending the stream;
	// it does not go into the backup file.
	backupReportName = ".backup-report.json"
)

// playbackBackupSkip names what the directory walk leaves out: the store's
// files (Backup copies them), the admin socket, locks and temporary files.
func playbackBackupSkip(rel string, d fs.DirEntry) bool {
	return store.Owns(rel) || rel == adminSocket || backupfile.Skip(rel, d)
}

type playbackBackupResult struct {
	File    string `json:"file"`
	Online  bool   `json:"online"`
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"`
	Records uint64 `json:"audit_records"`
	Head    string `json:"audit_head"`
	// Finished counts the finished recordings in the backup; Live lists
	// those live at the snapshot with the committed bytes it holds.
	Finished int              `json:"finished_recordings"`
	Live     []store.LiveCopy `json:"live_recordings,omitempty"`
	// Remote counts finished recordings whose files are only in object
	// storage (recordings.s3): the bucket keeps them, not the backup.
	Remote int `json:"remote_recordings,omitempty"`
}

func backup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("sshward-playback backup --dir DIR --to FILE [--passphrase-file FILE] [--json]")
	dir := fs.String("dir", "", "the server's directory (the server may be running)")
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
	res := playbackBackupResult{File: *to}
	storePart := offlineStorePart(ctx, *dir)
	if sock := filepath.Join(*dir, adminSocket); adminsock.Answers(sock) {
		res.Online = true
		storePart = onlineStorePart(ctx, sock)
	}
	if res.Bytes, err = backupfile.Create(*to, func(w io.Writer) error {
		return writePlaybackBackup(*dir, w, rcp, storePart, &res)
	}); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if *asJSON {
		return cli.JSON(stdout, res)
	}
	how := "offline"
	if res.Online {
		how = "online, through the running server"
	}
	fmt.Fprintf(stdout, "backup written (%s): %s (%d files, %.1f MiB, encrypted to the passphrase); audit chain: %d records; recordings: %d finished, %d live\n",
		how, res.File, res.Files, float64(res.Bytes)/(1<<20), res.Records, res.Finished, len(res.Live))
	return nil
}

// storePart writes the store's files into tw and reports what they hold.
type storePart func(tw *tar.Writer) (*store.BackupReport, int, error)

// offlineStorePart opens the store itself (no server runs on dir).
func offlineStorePart(ctx context.Context, dir string) storePart {
	return func(tw *tar.Writer) (*store.BackupReport, int, error) {
		st, err := openStopped(ctx, dir, nil) // audit.go; a server that answers on the socket is asked instead
		if err != nil {
			return nil, 0, err
		}
		defer st.Close()
		files := 0
		add := backupfile.TarAdd(tw, time.Now().UTC())
		rep, err := st.Backup(ctx, func(name string, size int64, mode fs.FileMode, write func(io.Writer) error) error {
			files++
			return add(name, size, mode, write)
		})
		return rep, files, err
	}
}

// onlineStorePart asks the server on the admin socket for the store's
// files and copies them into tw.
func onlineStorePart(ctx context.Context, sock string) storePart {
	return func(tw *tar.Writer) (*store.BackupReport, int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sshward-playback"+adminBackup, nil)
		if err != nil {
			return nil, 0, err
		}
		resp, err := adminsock.Client(sock, 0).Do(req)
		if err != nil {
			return nil, 0, fmt.Errorf("admin socket: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			return nil, 0, fmt.Errorf("the server refused the backup: %s", strings.TrimSpace(string(msg)))
		}
		tr := tar.NewReader(resp.Body)
		files := 0
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return nil, files, errors.New("the server's backup stream ended without its report (cut short)")
			}
			if err != nil {
				return nil, files, fmt.Errorf("the server's backup stream: %w", err)
			}
			if h.Name == backupReportName {
				var rep store.BackupReport
				if err := json.NewDecoder(io.LimitReader(tr, 16<<20)).Decode(&rep); err != nil {
					return nil, files, fmt.Errorf("the server's backup report: %w", err)
				}
				return &rep, files, nil
			}
			if h.Typeflag != tar.TypeReg || !store.Owns(h.Name) {
				return nil, files, fmt.Errorf("the server's backup stream holds %q, which is not the store's", h.Name)
			}
			if err := tw.WriteHeader(h); err != nil {
				return nil, files, err
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return nil, files, fmt.Errorf("the server's backup stream: %w", err)
			}
			files++
		}
	}
}

func writePlaybackBackup(dir string, w io.Writer, rcp age.Recipient, part storePart, res *playbackBackupResult) error {
	enc, err := age.Encrypt(w, rcp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(enc)
	rep, n, err := part(tw)
	if err != nil {
		return err
	}
	res.Files += n
	res.Records, res.Head = rep.Audit.Events, rep.Audit.Head
	res.Finished, res.Live, res.Remote = rep.Finished, rep.Live, rep.Remote
	n, err = backupfile.AddDir(tw, dir, playbackBackupSkip)
	res.Files += n
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return enc.Close()
}

// serveAdmin serves the admin socket in dir until ctx ends: GET
// /admin/backup streams the store's part of a backup.
func serveAdmin(ctx context.Context, dir string, st *store.Store, log *slog.Logger) (func(), error) {
	path := filepath.Join(dir, adminSocket)
	ln, err := adminsock.Listen(path, "sshward-playback")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+adminBackup, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-tar")
		tw := tar.NewWriter(w)
		rep, err := st.Backup(r.Context(), backupfile.TarAdd(tw, time.Now().UTC()))
		if err != nil {
			log.Error("playback: backup failed", "err", err)
			// Headers may be out: cut the stream so the reader fails.
			panic(http.ErrAbortHandler)
		}
		raw, err := json.Marshal(rep)
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: backupReportName, Size: int64(len(raw)), Mode: 0o600, ModTime: time.Now().UTC()})
		}
		if err == nil {
			_, err = tw.Write(raw)
		}
		if err == nil {
			err = tw.Close()
		}
		if err != nil {
			log.Error("playback: backup stream failed", "err", err)
			panic(http.ErrAbortHandler)
		}
		if _, err := st.AppendAudit(r.Context(), store.AuditEvent{Type: "playback.backup", Actor: "admin-socket", Outcome: "ok",
			Details: map[string]string{"audit_events": fmt.Sprint(rep.Audit.Events), "audit_head": rep.Audit.Head,
				"finished": fmt.Sprint(rep.Finished), "live": fmt.Sprint(len(rep.Live))}}); err != nil {
			log.Error("playback: cannot audit the backup", "err", err)
		}
		log.Info("playback: online backup taken", "audit_events", rep.Audit.Events, "finished", rep.Finished, "live", len(rep.Live))
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug), BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("playback: admin socket stopped", "err", err)
		}
	}()
	return func() {
		hs.Close()
		<-done
		os.Remove(path)
	}, nil
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
		if _, err := os.Stat(filepath.Join(work, store.IndexFile)); err != nil {
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
