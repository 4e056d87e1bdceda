// Command sshward-playback is the sshward playback server: it joins the CA
// once, then receives recordings from host agents and serves them to
// auditors (API, web UI).
//
//	sshward-playback serve --dir DIR --ca URL --fingerprint FP --join-token-file FILE [--listen ADDR] [--advertise URL]
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/cmd/internal/metricsrv"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/playback/web"
)

const usage = `sshward-playback: stores session recordings and serves them to auditors

usage:
  sshward-playback serve --dir DIR --ca URL --fingerprint FP --join-token-file FILE [--listen ADDR] [--advertise URL]
      The first start joins the CA with a one-time token (sshward-ca join-token --playback NAME);
      DIR then keeps the TLS key and certificate, and later starts need only --dir.
      Retention per tier is set in DIR/config.yaml (written at the first start).
  sshward-playback reindex --dir DIR [--json]
      Rebuilds DIR from the bucket of recordings.s3 (config.yaml): every archived recording missing here
      is imported, its digest and signature checked again. Stop the server first.
  sshward-playback backup --dir DIR --to FILE [--passphrase-file FILE] [--json]
      One file with snapshots of the index and search databases, the TLS identity, config.yaml
      and the recordings in DIR, encrypted with age to the passphrase ($SSHWARD_PLAYBACK_BACKUP_PASSPHRASE).
      Works while the server runs (through DIR/admin.sock) and while it is stopped.
  sshward-playback restore --from FILE --dir NEWDIR [--passphrase-file FILE] [--json]
      Restores a backup into a new or empty directory after verifying its audit chain.
  sshward-playback purge --dir DIR --reason TEXT ID...
      Deletes recordings for good (cast, metadata, search index; the index files are compacted so
      no free page keeps their text) and audits each purge. Stop the server first.
  sshward-playback audit verify --dir DIR [--json]
      Checks the hash chain of the playback audit log (views, ingests, purges). Stop the server first.

Exit status: 0 ok, 1 failed, 2 usage.
`

func main() {
	ctx, stop := cli.SignalContext()
	code := cli.Exit("sshward-playback", run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usagef("a verb is required")
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "purge":
		return purge(ctx, args[1:], stdout, stderr)
	case "reindex":
		return reindex(ctx, args[1:], stdout, stderr)
	case "backup":
		return backup(ctx, args[1:], stdout, stderr)
	case "restore":
		return restore(ctx, args[1:], stdout, stderr)
	case "audit":
		return audit(ctx, args[1:], stdout)
	}
	return cli.Usagef("unknown verb %q", args[0])
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("sshward-playback serve --dir DIR --ca URL --fingerprint FP --join-token-file FILE [--listen ADDR] [--advertise URL]")
	dir := fs.String("dir", "", "directory for the TLS identity, recordings and index")
	caURL := fs.String("ca", "", "CA URL, or its replicas' URLs comma-separated (first start; later read from DIR)")
	fingerprint := fs.String("fingerprint", "", "CA root fingerprint (first start)")
	token := fs.String("join-token", "", "one-time token from sshward-ca join-token --playback NAME (first start; prefer --join-token-file or $SSHWARD_JOIN_TOKEN)")
	tokenFile := fs.String("join-token-file", "", "file holding the one-time join token (keeps it off the command line)")
	listen := fs.String("listen", "127.0.0.1:8444", "HTTPS address")
	advertise := fs.String("advertise", "", "URL agents and clients reach this server at (default https://LISTEN)")
	var names cli.StringList
	fs.Var(&names, "name", "extra certificate name (repeatable; each must be allowed by the join token)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (unauthenticated: keep it on loopback or a management network)")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return cli.Usagef("--dir is required")
	}
	log, err := cli.Logger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	if *advertise == "" {
		if *advertise, err = playback.DefaultURL(*listen); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	// The settings first: a bad file (an identity file others can read)
	// is refused before anything else happens.
	settings, err := playback.LoadSettings(*dir)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	tok, err := cli.JoinToken(*token, *tokenFile, os.Getenv)
	if err != nil {
		return err
	}
	jc := playback.JoinConfig{Dir: *dir, CAURL: *caURL, Fingerprint: *fingerprint, Token: tok, URL: *advertise}
	if len(names) > 0 {
		jc.Names = append([]string{hostOf(*advertise)}, names...)
	}
	id, err := playback.EnsureIdentity(ctx, jc, time.Now())
	if err != nil {
		return err
	}
	if settings.Encryption == nil {
		log.Warn("recordings are stored in plaintext: set recordings.encryption in config.yaml to encrypt them at rest (README, Security guarantees)")
	} else {
		log.Info("recordings are encrypted at rest", "recipients", len(settings.Encryption.Recipients), "identities", len(settings.Encryption.Identities))
	}
	st, err := store.Open(ctx, store.Config{Dir: *dir, Logger: log, Keys: settings.Encryption})
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("the index in %s is in use: is another sshward-playback serving it?", *dir)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	stopAdmin, err := serveAdmin(ctx, *dir, st, log) // backup.go
	if err != nil {
		return err
	}
	defer stopAdmin()
	caClient, err := playback.NewCAClient(id.CAURL, id.RootPEM)
	if err != nil {
		return err
	}
	ui, err := web.New(web.Config{Logger: log})
	if err != nil {
		return err
	}
	// Revoked host certificates arrive by push from the CA.
	revoked, err := playback.NewRevokedHosts(id.CAURL, id.RootPEM, id.Certificate, log)
	if err != nil {
		return err
	}
	go revoked.Run(ctx)
	bucket, err := openObjects(ctx, settings.S3, log)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	cfg := playback.Config{
		Store: st, CA: caClient, HostCAs: id.HostCAs, SetHostCAs: id.SetHostCAs, TLS: id.TLSConfig(), RevokedHosts: revoked,
		Retention: settings.Retention, SweepInterval: settings.SweepInterval, UI: ui, Logger: log,
	}
	if settings.Encryption != nil {
		cfg.ExportRecipients = settings.Encryption.Recipients
		cfg.SpoolKeys = settings.Encryption // agents seal their spool to it
	}
	if bucket != nil {
		cfg.Objects = playback.EncryptObjects(bucket, settings.Encryption)
		// Live recordings are listed and followed on every replica.
		cfg.URL, cfg.PeerRootPEM = id.URL, id.RootPEM
		log.Info("archiving finished recordings to object storage", "endpoint", settings.S3.Endpoint, "bucket", settings.S3.Bucket, "prefix", settings.S3.Prefix)
	}
	var srvp atomic.Pointer[playback.Server] // read by scrapes, set once below
	if *metricsListen != "" {
		mln, err := metricsrv.Listen(*metricsListen)
		if err != nil {
			return err
		}
		defer mln.Close()
		reg := playbackMetrics(st, srvp.Load)
		cfg.Middleware = metricsrv.HTTP(reg, "sshward_playback")
		go func() {
			if err := metricsrv.Serve(ctx, mln, reg, log, func(ctx context.Context) error {
				if s := srvp.Load(); s != nil {
					return s.Ready(ctx)
				}
				return errors.New("starting")
			}); err != nil && ctx.Err() == nil {
				log.Error("playback: metrics listener stopped", "err", err)
			}
		}()
	}
	srv, err := playback.New(cfg)
	if err != nil {
		return err
	}
	srvp.Store(srv)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	log.Info("sshward-playback serving", "listen", ln.Addr().String(), "url", id.URL, "ca", id.CAURL,
		"certificate_valid_before", id.Leaf.NotAfter.UTC())
	fmt.Fprintf(stdout, "sshward-playback serving %s on %s\n", id.URL, ln.Addr())
	err = srv.Serve(ctx, ln)
	log.Info("sshward-playback stopped")
	return err
}

func hostOf(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Hostname()
	}
	return u
}
