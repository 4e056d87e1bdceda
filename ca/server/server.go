// Package server exposes a ca.Authority over HTTPS (the public API engineers,
// hosts and playback servers use) and over a unix socket (the admin verbs of
// sshward-ca while the CA runs). Every route is either public by design
// (health, trust material, KRLs, login), authenticated by a CA session token,
// or authenticated by a CA-signed host certificate; see routes.go.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/hostauth"
)

// Config configures a Server.
type Config struct {
	// Authority does the work.
	Authority *ca.Authority
	// TLS serves the public API; required by Serve.
	TLS *tls.Config
	// Logger receives request errors (default discard).
	Logger *slog.Logger
	// Now is the clock for host-auth checks (default time.Now).
	Now func() time.Time
	// ReadHeaderTimeout and IdleTimeout bound slow clients (defaults 10s, 120s).
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// RevocationHeartbeat is how often an idle revocation stream sends a
	// heartbeat (default DefaultRevocationHeartbeat).
	RevocationHeartbeat time.Duration
	// Middleware, when set, wraps the public API handler (metrics).
	Middleware func(http.Handler) http.Handler
}

// Server is the CA's HTTP front.
type Server struct {
	cfg    Config
	a      *ca.Authority
	log    *slog.Logger
	hosts  *hostauth.Verifier
	public http.Handler
	admin  http.Handler

	heartbeat time.Duration // of revocation streams
	watches   watchers      // open revocation streams per host
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Authority == nil {
		return nil, errors.New("server: Config.Authority is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	if cfg.RevocationHeartbeat <= 0 {
		cfg.RevocationHeartbeat = DefaultRevocationHeartbeat
	}
	s := &Server{cfg: cfg, a: cfg.Authority, log: cfg.Logger, heartbeat: cfg.RevocationHeartbeat}
	nonces := &hostauth.NonceCache{Size: 100_000, Now: cfg.Now}
	// Revoked host certificates are refused after verification, with an
	// audit record (refuseRevokedHost), not inside the verifier.
	s.hosts = &hostauth.Verifier{
		HostCAs: s.a.HostCAKeys,
		Now:     cfg.Now,
		Seen:    nonces.Seen,
	}
	s.public = s.routes()
	if cfg.Middleware != nil {
		s.public = cfg.Middleware(s.public)
	}
	s.admin = s.adminRoutes()
	return s, nil
}

// Handler is the public API handler (for tests with httptest).
func (s *Server) Handler() http.Handler { return s.public }

// AdminHandler is the admin API handler served on the unix socket.
func (s *Server) AdminHandler() http.Handler { return s.admin }

// Serve serves the public API with TLS on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("server: Config.TLS is required to serve")
	}
	// Playback servers authenticate the revocation stream with their TLS
	// certificate from the CA's root; everyone else sends none.
	tc := s.cfg.TLS.Clone()
	if tc.ClientAuth == tls.NoClientCert {
		tc.ClientAuth = tls.RequestClientCert
	}
	return s.serve(ctx, tls.NewListener(ln, tc), s.public)
}

// ServeAdmin serves the admin API on a unix socket listener until ctx ends.
func (s *Server) ServeAdmin(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, ln, s.admin)
}

func (s *Server) serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}
