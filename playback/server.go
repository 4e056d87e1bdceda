package playback

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/atrest"
)

// Config configures a Server.
type Config struct {
	// Store holds the recordings. Required.
	Store *store.Store
	// CA checks readers' sessions, logs them in and out, and serves the
	// trust material. Required.
	CA CA
	// HostCAs returns the host CA keys agents' certificates must chain to
	// (Identity.HostCAs). Required.
	HostCAs func() []ssh.PublicKey
	// SetHostCAs, when set, receives the host CA keys of every trust
	// refresh (Identity.SetHostCAs).
	SetHostCAs func(lines []string) error
	// ExportRecipients are what an encrypted export (export?encrypted=1,
	// sshward export --encrypted) is encrypted to: recordings.encryption's
	// recipients. None: encrypted exports are refused.
	ExportRecipients []age.Recipient
	// SpoolKeys are recordings.encryption's keys: agents are told to seal
	// their spool to its RecipientStrings (the answer to ingest start), and
	// its Identities open what they ship sealed (ingest "sealed"). Nil:
	// agents are told nothing and sealed chunks are refused.
	SpoolKeys *atrest.Keys
	// TLS serves HTTPS (Identity.TLSConfig); required by Serve.
	TLS *tls.Config
	// Retention per tier; the zero value keeps everything.
	Retention Retention
	// SweepInterval is how often expired recordings are deleted (default 1h).
	SweepInterval time.Duration
	// RevokedHosts, when set, lists revoked host certificates (NewRevokedHosts,
	// which the caller runs): uploads from them are refused with 403 and
	// audited.
	RevokedHosts interface {
		Revoked(cert *ssh.Certificate) bool
	}
	// TrustRefresh is how often the host CA keys are fetched (default 5m).
	TrustRefresh time.Duration
	// AuditorGroup is the group that may list and watch recordings
	// (default "auditors").
	AuditorGroup string
	// SessionCacheTTL is how long a CA answer about a session token is
	// trusted (default 30s): a revoked session keeps access at most that
	// long.
	SessionCacheTTL time.Duration
	// UI serves the web pages at "GET /" (playback/web); nil serves none.
	UI http.Handler
	// Logger receives requests refused and failures (default discard).
	Logger *slog.Logger
	// Now and Rand are injectable (defaults time.Now, crypto/rand).
	Now  func() time.Time
	Rand io.Reader
	// Objects, when set, is the S3-compatible bucket every finished
	// recording is archived to (archive.go): retried until it is there,
	// deleted from it by retention, and what Reindex rebuilds from.
	Objects Objects
	// ArchiveRetry is the delay between failed archive uploads (default 10s).
	ArchiveRetry time.Duration
	// ReplicaSync is how often, with Objects, recordings other replicas
	// archived are imported (replica.go; default 2s, negative: never).
	ReplicaSync time.Duration
	// URL is this replica's advertised URL (Identity.URL, as the CA lists
	// it in playback_replicas). With Objects, it turns on live recordings
	// across replicas (live_replicas.go): this replica announces the live
	// recordings it receives, lists those of the others, and forwards the
	// follow of one to the replica receiving it.
	URL string
	// PeerRootPEM is the CA's root (Identity.RootPEM): the certificate of a
	// replica a follow is forwarded to must chain to it. None: nothing is
	// forwarded (live recordings of other replicas are still listed).
	PeerRootPEM []byte
	// Middleware, when set, wraps every handler (metrics).
	Middleware func(http.Handler) http.Handler
}

// Check names the first bad field.
func (c *Config) Check() error {
	switch {
	case c.Store == nil:
		return errors.New("playback: Config.Store is required")
	case c.CA == nil:
		return errors.New("playback: Config.CA is required")
	case c.HostCAs == nil:
		return errors.New("playback: Config.HostCAs is required")
	case c.SweepInterval < 0 || c.TrustRefresh < 0 || c.SessionCacheTTL < 0:
		return errors.New("playback: Config durations must not be negative")
	}
	return nil
}

// Server is the playback server: ingest for agents, the read API for
// auditors, the web UI. Safe for concurrent use.
type Server struct {
	cfg      Config
	st       *store.Store
	log      *slog.Logger
	hosts    *hostauth.Verifier
	sessions *sessionCache
	handler  http.Handler
	archive  *archiver // nil without Config.Objects
	replica  replicaStats
	live     liveState
	peers    http.RoundTripper // to other replicas; nil without Config.PeerRootPEM

	mu        sync.Mutex // guards integrity
	integrity map[string]integrityCheck

	trustMu   sync.Mutex // guards the fields below
	trustResp *api.TrustResponse
	trustAt   time.Time
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Hour
	}
	if cfg.TrustRefresh == 0 {
		cfg.TrustRefresh = 5 * time.Minute
	}
	if cfg.AuditorGroup == "" {
		cfg.AuditorGroup = "auditors"
	}
	if cfg.SessionCacheTTL == 0 {
		cfg.SessionCacheTTL = 30 * time.Second
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	s := &Server{cfg: cfg, st: cfg.Store, log: cfg.Logger, integrity: map[string]integrityCheck{},
		live: liveState{held: map[string]*liveHold{}, remote: map[string]announcement{}}}
	if len(cfg.PeerRootPEM) > 0 {
		tc, err := tlsca.ClientConfigFromPEM(cfg.PeerRootPEM)
		if err != nil {
			return nil, fmt.Errorf("playback: Config.PeerRootPEM: %w", err)
		}
		s.peers = &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second,
			TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 30 * time.Second,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	}
	if cfg.Objects != nil {
		s.archive = newArchiver(cfg.Store, cfg.Objects, cfg.Logger, cfg.ArchiveRetry)
	}
	nonces := &hostauth.NonceCache{Size: 1 << 18, Now: cfg.Now}
	s.hosts = &hostauth.Verifier{HostCAs: cfg.HostCAs, Now: cfg.Now, Seen: nonces.Seen}
	s.sessions = &sessionCache{ca: cfg.CA, ttl: cfg.SessionCacheTTL, now: cfg.Now, entries: map[[32]byte]sessionEntry{}}
	s.handler = s.routes()
	if cfg.Middleware != nil {
		s.handler = cfg.Middleware(s.handler)
	}
	return s, nil
}

// Handler is the whole HTTP handler (for tests with httptest).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTPS on ln until ctx ends, with the retention sweeper and
// the trust refresher beside it.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("playback: Config.TLS is required to serve")
	}
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// Bounds a slow upload of the largest chunk; no WriteTimeout, as
		// a followed live session streams for as long as it lasts.
		ReadTimeout: 2 * time.Minute,
		IdleTimeout: 120 * time.Second,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	bg, stopBg := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.sweepLoop(bg) })
	wg.Go(func() { s.trustLoop(bg) })
	if s.archive != nil {
		wg.Go(func() { s.archive.run(bg, s.finishedIDs) })
		wg.Go(func() { s.syncLoop(bg) })
		wg.Go(func() { s.liveLoop(bg) })
	}
	defer func() {
		stopBg()
		wg.Wait()
	}()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(tls.NewListener(ln, s.cfg.TLS)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("playback: serve: %w", err)
	case <-ctx.Done():
	}
	// Followers of live sessions never finish by themselves: close them
	// after a short grace.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("playback: serve: %w", err)
	}
	return nil
}

// trustLoop refreshes the host CA keys from the CA, so that a rotated host
// CA reaches the server without a restart; a CA that cannot be reached
// leaves the saved keys in force.
func (s *Server) trustLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.TrustRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.refreshTrust(ctx)
	}
}

func (s *Server) refreshTrust(ctx context.Context) {
	tr, err := s.fetchTrust(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "playback: trust refresh failed; keeping the saved host CA keys", "err", err)
		return
	}
	if s.cfg.SetHostCAs == nil || tr.HostCA == "" {
		return
	}
	// During a host-CA rotation's overlap, agents carry certificates of
	// either key.
	lines := tr.HostCAKeys
	if len(lines) == 0 {
		lines = []string{tr.HostCA}
	}
	if err := s.cfg.SetHostCAs(lines); err != nil {
		s.log.ErrorContext(ctx, "playback: trust refresh", "err", err)
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
		if s.archive != nil {
			st := s.archive.status()
			fmt.Fprintf(w, "archive: %d pending, %d archived", st.Pending, st.Archived)
			if st.LastError != "" {
				// The error itself (which may name the bucket) is in the log.
				fmt.Fprintf(w, "; failing since %s", st.LastErrAt.UTC().Format(time.RFC3339))
			}
			io.WriteString(w, "\n")
		}
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if err := s.Ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready: "+err.Error()+"\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	// ingest (agents, host certificate)
	mux.HandleFunc("POST "+recorder.IngestPathPrefix+"{id}/"+recorder.IngestStart, s.withHost(recorder.MaxIngestJSONBytes, s.handleStart))
	mux.HandleFunc("PUT "+recorder.IngestPathPrefix+"{id}/"+recorder.IngestChunk, s.withHost(recorder.MaxChunkBytes, s.handleChunk))
	mux.HandleFunc("POST "+recorder.IngestPathPrefix+"{id}/"+recorder.IngestFinish, s.withHost(recorder.MaxIngestJSONBytes, s.handleFinish))
	mux.HandleFunc("PUT "+recorder.IngestPathPrefix+"{id}/"+recorder.IngestSealed, s.withHost(recorder.MaxChunkBytes, s.handleSealedChunk))
	mux.HandleFunc("PUT "+recorder.IngestPathPrefix+"{id}/"+recorder.IngestBlob, s.withHost(recorder.MaxChunkBytes, s.handleBlobChunk)) // blob_ingest.go
	s.unrecordedRoutes(mux)
	// Unknown paths under the API prefixes authenticate first, so that they
	// answer 401 like the known ones. Patterns carry a method so that they
	// do not conflict with the UI's "GET /".
	for _, m := range catchAllMethods {
		mux.HandleFunc(m+" "+recorder.IngestPathPrefix, s.withHost(recorder.MaxIngestJSONBytes, func(w http.ResponseWriter, r *http.Request, _ *ssh.Certificate, _ []byte) {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "no such ingest path")
		}))
		mux.HandleFunc(m+" /api/", s.withAuditor(func(w http.ResponseWriter, r *http.Request, _ *reader) {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "no such API path: "+r.URL.Path)
		}))
	}
	// readers
	mux.HandleFunc("POST /api/login", s.handleLogin)
	mux.HandleFunc("POST /api/logout", s.withReader(s.handleLogout))
	mux.HandleFunc("GET /api/sessions", s.withAuditor(s.handleList))
	mux.HandleFunc("GET /api/sessions/{id}", s.withAuditor(s.handleGet))
	mux.HandleFunc("GET /api/sessions/{id}/cast", s.withAuditor(s.handleCast))
	mux.HandleFunc("GET /api/sessions/{id}/export", s.withAuditor(s.handleExport))
	mux.HandleFunc("GET /api/sessions/{id}/blob", s.withAuditor(s.handleBlob))            // blob_serve.go
	mux.HandleFunc("POST /api/sessions/{id}/terminate", s.withAuditor(s.handleTerminate)) // live_terminate.go
	mux.HandleFunc("GET /api/sessions/{id}/commands", s.withAuditor(s.handleCommands))    // live_commands.go
	mux.HandleFunc("GET /api/search", s.withAuditor(s.handleSearch))
	mux.HandleFunc("GET /api/audit", s.withAuditor(s.handleAudit))
	ui := s.cfg.UI
	if ui == nil {
		ui = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "no such path: "+r.URL.Path)
		})
	}
	mux.Handle("GET /", ui)
	return s.recoverer(securityHeaders(mux))
}

var catchAllMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

// recoverer turns a handler panic into a 500 without stopping the server.
func (s *Server) recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("playback: handler panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeError(w, http.StatusInternalServerError, api.CodeInternal, "internal error")
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// writeError writes the API error body every sshward server uses.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, &api.Error{Code: code, Message: message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Ready reports whether the server can take uploads and serve recordings
// now: its store answers. GET /readyz answers 503 with the reason
// otherwise. The search index catching up does not make it unready
// (searches say what they did not cover).
func (s *Server) Ready(ctx context.Context) error {
	if _, err := s.st.Get(ctx, "readyz-probe"); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("store not answering: %w", err)
	}
	return nil
}
