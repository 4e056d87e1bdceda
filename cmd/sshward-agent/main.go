// Command sshward-agent is sshward's host SSH server: it joins the CA once
// with a join token, then serves SSH to certificate holders of its tier and
// records every session into the spool in its data directory.
//
//	sshward-agent --ca URL --fingerprint FP --join-token-file FILE --tier T --data DIR [--listen ADDR] [--playback URL]
//	sshward-agent status --data DIR [--json]
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/sshward/sshward/ca/api"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sshward/sshward/agent"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/cmd/internal/metricsrv"
	"github.com/sshward/sshward/recorder"
)

const prog = "sshward-agent"

// caRootFile keeps the CA's TLS root once the fingerprint verified it, so
// that later starts need no --fingerprint.
const caRootFile = "ca_root.pem"

func main() {
	ctx, stop := signalContext()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil && errors.Is(context.Cause(ctx), agent.ErrRestarting) && (len(os.Args) < 2 || os.Args[1] != "status") {
		err = restart(os.Stderr)
	}
	os.Exit(cli.Exit(prog, err, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "status" {
		return runStatus(args[1:], stdout)
	}
	return runServe(ctx, args, stderr)
}

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := cli.NewFlagSet(prog + " --ca URL --fingerprint FP --join-token-file FILE --tier T --data DIR [--listen ADDR] [--playback URL]\n" +
		"       " + prog + " status --data DIR [--json]")
	caURL := fs.String("ca", "", "CA base URL (https://…), or its replicas' URLs comma-separated (fails over between them)")
	fingerprint := fs.String("fingerprint", "", "SHA-256 fingerprint of the CA's TLS root (first start; kept in DIR afterwards)")
	token := fs.String("join-token", "", "one-time join token from `sshward-ca join-token` (first start only; prefer --join-token-file or $SSHWARD_JOIN_TOKEN)")
	tokenFile := fs.String("join-token-file", "", "file holding the one-time join token (keeps it off the command line)")
	tier := fs.String("tier", "", "tier this host belongs to (staging, production, break-glass)")
	dataDir := fs.String("data", "", "data directory: host key and certificate, caches, spool")
	listen := fs.String("listen", ":2222", "SSH listen address")
	playback := fs.String("playback", "", "playback server URL for shipping recordings; several, comma-separated, are tried in turn (replicas on one object store)")
	hostName := fs.String("host-name", "", "host name recorded with sessions (default: the system's)")
	sftpServer := fs.String("sftp-server", agent.DefaultSFTPServerPath, "sftp-server run as the user for SFTP")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (unauthenticated: keep it on loopback or a management network)")
	// Pre-authentication limits (sshd's MaxStartups, PerSourceMaxStartups, LoginGraceTime).
	maxStartups := fs.String("max-startups", agent.DefaultMaxStartups().String(), "random early drop of unauthenticated connections, begin:rate:full (sshd's MaxStartups)")
	perSource := fs.Int("max-startups-per-source", agent.DefaultMaxStartupsPerSource, "most unauthenticated connections from one IPv4 address or IPv6 /64; more are closed at once")
	handshakeTimeout := fs.Duration("handshake-timeout", agent.DefaultHandshakeTimeout, "time from connect to authenticated; slower connections are closed")
	bannerTimeout := fs.Duration("banner-timeout", agent.DefaultBannerTimeout, "time for a client to send its SSH version line; idle connections are closed")
	var labels cli.StringList
	fs.Var(&labels, "label", "KEY=VALUE: a label of this host (repeatable), e.g. app=billing; certificates scoped to labels are admitted only where all match")
	var spoolRecipients cli.StringList
	fs.Var(&spoolRecipients, "spool-recipients", "age1…: seal the spool to this recipient until the playback server names its own (repeatable; the server's set, once learned, is cached in DIR/spool-recipients and wins)")
	var redact cli.StringList
	fs.Var(&redact, "redact", "NAME=REGEXP: also redact matches of REGEXP (RE2, starting with literal text) from recordings, as [REDACTED:NAME] (repeatable; private keys, AWS, GitHub, Slack and bearer tokens always are)")
	penalty := fs.Duration("per-source-penalty", agent.DefaultPerSourcePenalty, "penalty a source earns per connection closed by a pre-auth timeout; past 15s its connections are closed at once (0 turns penalties off)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	hostLabels, err := api.ParseLabels(labels)
	if err != nil {
		return cli.Usagef("--label: %v", err)
	}
	patterns, err := redactPatterns(redact)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return cli.Usagef("unexpected argument %q", pos[0])
	case *caURL == "":
		return cli.Usagef("--ca is required")
	case *tier == "":
		return cli.Usagef("--tier is required")
	case *dataDir == "":
		return cli.Usagef("--data is required")
	case *perSource < 1:
		return cli.Usagef("--max-startups-per-source must be at least 1")
	case *handshakeTimeout <= 0 || *bannerTimeout <= 0:
		return cli.Usagef("--handshake-timeout and --banner-timeout must be positive durations, e.g. 15s")
	case *penalty < 0:
		return cli.Usagef("--per-source-penalty must be 0 (off) or a positive duration, e.g. 10s")
	}
	if *penalty == 0 {
		*penalty = -1 // agent.Config: negative turns penalties off
	}
	startups, err := agent.ParseStartupLimits(*maxStartups)
	if err != nil {
		return cli.Usagef("--max-startups: want begin:rate:full with 1 ≤ begin ≤ full and a rate from 0 to 100, e.g. %s", agent.DefaultMaxStartups())
	}
	if *token, err = cli.JoinToken(*token, *tokenFile, os.Getenv); err != nil {
		return err
	}
	log, err := cli.Logger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("create the data directory: %w", err)
	}

	ca, err := newCAClient(ctx, log, *caURL, *fingerprint, *dataDir)
	if err != nil {
		return err
	}
	srv, err := agent.New(agent.Config{
		Tier: *tier, DataDir: *dataDir, CA: ca, JoinToken: *token,
		HostName: *hostName, Labels: hostLabels, SFTPServerPath: *sftpServer, Logger: log,
		MaxStartups: startups, MaxStartupsPerSource: *perSource,
		HandshakeTimeout: *handshakeTimeout, BannerTimeout: *bannerTimeout, PerSourcePenalty: *penalty,
		Redact: patterns,
		// The playback server's TLS certificate chains to the CA root; with
		// no --playback the agent asks the CA where it registered.
		Playback: &agent.PlaybackConfig{URL: *playback, RootPEM: ca.RootPEM(), SpoolRecipients: spoolRecipients},
	})
	if err != nil {
		return err
	}
	if *metricsListen != "" {
		mln, err := metricsrv.Listen(*metricsListen)
		if err != nil {
			return err
		}
		defer mln.Close()
		reg := agentMetrics(srv, *dataDir, time.Now)
		go func() {
			if err := metricsrv.Serve(ctx, mln, reg, log, srv.Readiness); err != nil && ctx.Err() == nil {
				log.Error("agent: metrics listener stopped", "err", err)
			}
		}()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	err = srv.Serve(ctx, ln)
	if errors.Is(err, agent.ErrServerClosed) {
		return nil
	}
	return err
}

// newCAClient trusts the CA root saved in the data directory, or pins the
// fingerprint and saves the root it verified for later starts.
func newCAClient(ctx context.Context, log *slog.Logger, url, fingerprint, dataDir string) (*client.Client, error) {
	rootPath := filepath.Join(dataDir, caRootFile)
	root, err := os.ReadFile(rootPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read the saved CA root: %w", err)
	}
	cfg := client.Config{URL: url, RootPEM: root, Log: log}
	if len(root) == 0 {
		if fingerprint == "" {
			return nil, cli.Usagef("--fingerprint is required on first start (sshward-ca init prints it)")
		}
		cfg.Fingerprint = fingerprint
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	if len(root) > 0 {
		return c, nil
	}
	hctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := c.Health(hctx); err != nil {
		// A joined agent runs on without the CA (cached revocations);
		// a join fails later with its own clear error.
		log.Warn("the CA is unreachable", "ca", url, "err", err)
		return c, nil
	}
	if pem := c.RootPEM(); len(pem) > 0 {
		if err := os.WriteFile(rootPath, pem, 0o600); err != nil {
			log.Warn("cannot save the CA root; pass --fingerprint on every start", "err", err)
		}
	}
	return c, nil
}

func runStatus(args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet(prog + " status --data DIR [--json]")
	dataDir := fs.String("data", "", "data directory of the agent")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return cli.Usagef("unexpected argument %q", pos[0])
	case *dataDir == "":
		return cli.Usagef("--data is required")
	}
	st, err := agent.ReadStatus(*dataDir, time.Now())
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(stdout, st)
	}
	return st.WriteText(stdout)
}

// redactPatterns reads --redact NAME=REGEXP values and checks them with the
// built-in patterns, so a bad one stops the agent at start.
func redactPatterns(values []string) ([]recorder.RedactPattern, error) {
	var patterns []recorder.RedactPattern
	for _, r := range values {
		name, re, ok := strings.Cut(r, "=")
		if !ok {
			return nil, cli.Usagef("--redact %q: want NAME=REGEXP, e.g. --redact 'vault-token=hvs\\.[A-Za-z0-9]{24,}'", r)
		}
		patterns = append(patterns, recorder.RedactPattern{Name: name, Regexp: re})
	}
	if _, err := recorder.NewRedaction(append(recorder.DefaultRedactPatterns(), patterns...), 0); err != nil {
		return nil, cli.Usagef("--redact: %v", err)
	}
	return patterns, nil
}
