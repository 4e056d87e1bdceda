package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/auditarchive"
	"github.com/sshward/sshward/ca/identity"
	"github.com/sshward/sshward/ca/server"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/cmd/internal/adminsock"
	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/cmd/internal/metricsrv"
)

func (e *env) cmdServe(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca serve --dir DIR [--listen ADDR] [--advertise URL]")
	dir := fs.String("dir", "", "CA directory made by sshward-ca init")
	listen := fs.String("listen", "", "HTTPS address (default: config.yaml listen)")
	passFile := fs.String("passphrase-file", "", "file holding the CA passphrase (else $SSHWARD_CA_PASSPHRASE)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	advertise := fs.String("advertise", "", "URL clients and agents reach this replica at, listed in the trust bundle (default https://LISTEN unless it listens on every address)")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (unauthenticated: keep it on loopback or a management network)")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *advertise != "" && !strings.HasPrefix(*advertise, "https://") {
		return cli.Usagef("--advertise %q must be an https:// URL", *advertise)
	}
	l := layout{*dir}
	if err := l.check(); err != nil {
		return err
	}
	setMemoryBudget()
	logw := newLogBuffer(e.stderr)
	defer logw.Close()
	log, err := cli.Logger(logw, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(l.config())
	if err != nil {
		return err
	}
	if addr := os.Getenv(pprofEnv); addr != "" {
		if err := startPprof(ctx, addr, log); err != nil {
			return err
		}
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	pol, err := loadPolicy(l.policy())
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	sched, err := openOnCall(l.dir, cfg, pol)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	pass, err := e.passphrase(*passFile)
	if err != nil {
		return err
	}
	// A tier added to the policy after init gets its own CA key; a key
	// config.yaml names in a token is taken up (keys.go).
	if err := ensureKeys(ctx, l, cfg.Keys, pol.TierNames(), pass, log); err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	userCAs := map[string]ssh.Signer{}
	prevCAs := map[string]ca.PreviousKey{}
	for _, t := range pol.Tiers {
		// The key ring: the signing key and, during a rotation's
		// overlap, the previous one (rotate.go).
		s, prev, err := loadCA(ctx, l, ca.UserKey(t.Name), pass)
		if err != nil {
			return fmt.Errorf("open %s user CA: %w", t.Name, err)
		}
		userCAs[t.Name] = s
		if prev.Key != nil {
			prevCAs[t.Name] = prev
		}
	}
	hostCA, prevHostCA, err := loadCA(ctx, l, ca.HostKey, pass)
	if err != nil {
		return fmt.Errorf("open host CA: %w", err)
	}
	root, err := tlsca.LoadRoot(ctx, l.tls(), pass)
	if err != nil {
		return fmt.Errorf("open TLS root: %w", err)
	}
	// The TOTP secret box derives its key from the passphrase once the
	// store is open; keep a copy until then and wipe both.
	boxPass := bytes.Clone(pass)
	defer clear(boxPass)
	// Key rotation through the admin socket makes new keys under the same
	// passphrase; it stays in this process's memory only.
	rotator := &dirKeys{l: l, pass: bytes.Clone(pass)}
	defer clear(rotator.pass)
	clear(pass)
	names := append([]string{}, cfg.TLSNames...)
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
		names = append(names, host)
	}
	if hn, err := os.Hostname(); err == nil {
		names = append(names, hn)
	}
	tlsCfg, err := root.ServerTLSConfig(names, 30*24*time.Hour, time.Now)
	if err != nil {
		return fmt.Errorf("TLS: %w", err)
	}

	db, err := openStore(ctx, l, log, 0)
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("the store %s is in use: is another sshward-ca serving %s?", l.db(), *dir)
	}
	if err != nil {
		return err
	}
	defer db.Close()
	archive, segment, every, err := openAuditArchive(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	if archive != nil {
		log.Info("archiving the audit log to object storage", "endpoint", cfg.Audit.Archive.S3.Endpoint, "bucket", cfg.Audit.Archive.S3.Bucket,
			"prefix", cfg.Audit.Archive.S3.Prefix, "segment", segment, "every", every, "prune", cfg.Audit.Archive.Prune)
	}
	plugs, err := startPlugins(ctx, l.dir, cfg.Plugins, db, log)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	defer plugs.close()

	// TOTP secrets are encrypted at rest with a key derived from the passphrase.
	box, err := ca.NewSecretBox(ctx, db, boxPass)
	clear(boxPass)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	acfg := ca.Config{Store: db, Policy: pol, UserCAs: userCAs, HostCA: hostCA, TLSRoot: root, Logger: log, ApprovalPolicy: plugs.approval, Secrets: box,
		PreviousUserCAs: prevCAs, PreviousHostCA: prevHostCA, Keys: rotator}
	if db.Shared() {
		// Replicas share the CA key set through the store (sharedkeys.go).
		shared := newSharedKeys(db, l, rotator.pass, log, pol.TierNames())
		if err := shared.seed(ctx); err != nil {
			return fmt.Errorf("refusing to start: %w", err)
		}
		acfg.Keys, acfg.KeySet = shared, shared
	}
	if cfg.OIDC.Issuer != "" {
		v, err := identity.NewOIDCVerifier(ctx, identity.OIDCConfig{
			Issuer: cfg.OIDC.Issuer, ClientID: cfg.OIDC.ClientID, Scopes: cfg.OIDC.Scopes,
			UserClaim: cfg.OIDC.UserClaim, GroupsClaim: cfg.OIDC.GroupsClaim, MFAAMR: cfg.OIDC.MFAAMR, MFAACR: cfg.OIDC.MFAACR,
		})
		if err != nil {
			return fmt.Errorf("OIDC provider %s: %w", cfg.OIDC.Issuer, err)
		}
		acfg.OIDC = v
		acfg.OIDCClient = api.OIDCConfig{Issuer: cfg.OIDC.Issuer, ClientID: cfg.OIDC.ClientID, Scopes: cfg.OIDC.Scopes, MFAScopes: cfg.OIDC.MFAScopes, RedirectListen: cfg.OIDC.RedirectListen}
	}
	if sched != nil {
		acfg.OnCall = sched
	}
	a, err := ca.New(acfg)
	if err != nil {
		return err
	}
	if err := a.SyncKeys(ctx); err != nil {
		// Not ready (GET /readyz says why) until a sync works.
		log.Error("sshward-ca: the CA keys in the shared store cannot be used", "err", err)
	}
	// Opening the keys and the secret box (argon2id, 64 MiB) grew the heap;
	// hand it back before serving so the budget starts from the live set.
	debug.FreeOSMemory()
	scfg := server.Config{Authority: a, TLS: tlsCfg, Logger: log}
	var reg *prometheus.Registry
	var mln net.Listener
	if *metricsListen != "" {
		if mln, err = metricsrv.Listen(*metricsListen); err != nil {
			return err
		}
		defer mln.Close()
		reg = caMetrics(db)
		scfg.Middleware = metricsrv.HTTP(reg, "sshward_ca")
	}
	srv, err := server.New(scfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	aln, err := adminsock.Listen(l.socket(), "sshward-ca")
	if err != nil {
		ln.Close()
		return err
	}
	defer os.Remove(l.socket())
	if u := advertiseURL(*advertise, ln.Addr()); u != "" {
		if err := a.RegisterReplica(ctx, u); err != nil {
			log.Warn("sshward-ca: this replica is not listed in the trust bundle", "url", u, "err", err)
		}
	}
	log.Info("sshward-ca serving", "url", "https://"+ln.Addr().String(), "fingerprint", root.Fingerprint(),
		"tiers", strings.Join(pol.TierNames(), ","), "admin_socket", l.socket())
	fmt.Fprintf(e.stdout, "sshward-ca serving https://%s (root fingerprint %s)\n", ln.Addr(), root.Fingerprint())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { return srv.ServeAdmin(gctx, aln) })
	g.Go(func() error { return plugs.run(gctx) })
	g.Go(func() error { return runOnCall(gctx, a, sched, log) })
	g.Go(func() error { return a.RunKeyRetirement(gctx, 0) })
	g.Go(func() error { return a.RunKeySync(gctx, 0) })
	if archive != nil {
		o := auditarchive.RunOptions{Segment: segment, Every: every, Prune: cfg.Audit.Archive.Prune, Floor: notifierFloor(db, cfg.Plugins)}
		g.Go(func() error { auditarchive.Run(gctx, db, archive, o, log); return nil })
	}
	if cfg.Store.Etcd != nil {
		// Replicas share the store: terminate orders signed by another
		// reach this one's agents through the audit log.
		g.Go(func() error { return a.RunTerminateSync(gctx, 0) })
	}
	if mln != nil {
		g.Go(func() error { return metricsrv.Serve(gctx, mln, reg, log, a.Ready) })
	}
	err = g.Wait()
	log.Info("sshward-ca stopped")
	return err
}

// advertiseURL is the URL this replica registers in the trust bundle: the
// --advertise flag, else https://ADDR when addr is one address (not every
// address of the machine, which names no reachable host).
func advertiseURL(flag string, addr net.Addr) string {
	if flag != "" {
		return flag
	}
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return ""
	}
	return "https://" + addr.String()
}
