package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/recorder"
)

// Server is the host SSH server. Create it with New and run it with Serve.
type Server struct {
	cfg Config
	log *slog.Logger

	spoolKeys *spoolKeys // what the spool seals to (spoolkeys.go); set by Serve with its own spool

	id     atomic.Pointer[hostIdentity] // set by Serve before accepting; swapped on renewal
	revs   atomic.Pointer[revocations]  // nil until a list is cached or fetched
	single *singleUse                   // set by Serve before accepting
	spool  Spool                        // set by Serve before accepting
	unrec  *unrecordedOutbox            // reports of unrecorded sessions; set by Serve before accepting
	redact *recorder.Redaction          // secrets kept out of recordings, audit and logs; set by New

	recQueues recQueueSet // the output pumps' recorder queues (recqueue.go)

	preauth *preauth  // unauthenticated connections (preauth.go); set by New
	over    oversight // terminate orders and flag rules (terminate.go, flags.go)

	playback         atomic.Pointer[string] // the playback server's URL once known (unrecordedplayback.go)
	playbackHTTPOnce sync.Once              // builds the two fields below
	playbackHTTP     *http.Client
	playbackHTTPErr  error
	ready            chan struct{} // closed by Serve once it accepts connections

	mu      sync.Mutex // guards the fields below
	conns   map[*serverConn]struct{}
	closing error // set by endAll: the cause for connections admitted after

	serving atomic.Bool

	retired retiredKeys   // user-CA keys retired by a rotation (trustrotate.go)
	hostCA  hostCARenewal // host-CA keys orders are verified with (hostcatrust.go)
}

// New checks cfg and returns a Server. It does no I/O: Serve joins the CA,
// opens the spool and listens.
func New(cfg Config) (*Server, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var seed [32]byte
	if _, err := io.ReadFull(cfg.Rand, seed[:]); err != nil {
		return nil, fmt.Errorf("agent: seed: %w", err)
	}
	redact, err := cfg.redaction()
	if err != nil {
		return nil, fmt.Errorf("agent: config: Redact: %w", err)
	}
	return &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		redact:  redact,
		preauth: newPreauth(cfg.MaxStartupsPerSource, cfg.MaxStartups, cfg.PerSourcePenalty, seed),
		ready:   make(chan struct{}),
		conns:   make(map[*serverConn]struct{}),
		hostCA:  hostCARenewal{kick: make(chan struct{}, 1)},
	}, nil
}

// PreauthStats reports the pre-authentication limits' counters.
func (s *Server) PreauthStats() PreauthStats { return s.preauth.snapshot(s.cfg.Now()) }

func (s *Server) identity() *hostIdentity { return s.id.Load() }

// Ready is closed once Serve has established the host identity, opened
// the spool and accepts connections.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// HostCertificate returns the host certificate in use, nil before Serve
// has established the host identity.
func (s *Server) HostCertificate() *ssh.Certificate {
	if id := s.identity(); id != nil {
		return id.cert
	}
	return nil
}

// Serve establishes the host identity (joining the CA with the join token
// on first start), loads the revocation cache, opens the spool and serves
// SSH on ln until ctx ends. Then it ends every session with a message and
// exit status ExitAgentStopped, waits for them to finish their recordings
// (marked incomplete: "agent stopped", or "agent restarted" when ctx was
// cancelled with ErrRestarting as its cause), and returns ErrServerClosed.
// Serve closes ln. It may be called once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("agent: Serve called twice")
	}
	defer ln.Close()
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("agent: create data directory: %w", err)
	}
	if fi, err := os.Stat(s.cfg.DataDir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// It holds the host key and what the host trusts: ours alone.
		s.log.WarnContext(ctx, "agent: data directory was readable by others; making it 0700", "dir", s.cfg.DataDir)
		if err := os.Chmod(s.cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("agent: data directory: %w", err)
		}
	}
	id, err := s.establishIdentity(ctx)
	if err != nil {
		return err
	}
	s.setIdentity(id)

	revs, err := loadRevocations(s.cfg.DataDir)
	if err != nil {
		return err
	}
	s.revs.Store(revs)
	// One synchronous fetch, briefly, so that a restarted agent does not
	// admit a certificate revoked while it was down; the cache covers a CA
	// that is unreachable.
	fetchCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := s.refreshRevocations(fetchCtx); err != nil {
		s.log.WarnContext(ctx, "agent: revocation list unavailable at start; enforcing the cached one",
			"err", err, "cached_generation", s.revocationGeneration())
	}
	cancel()

	s.single, err = openSingleUse(s.cfg.DataDir, s.cfg.Now(), s.cfg.Rand)
	if err != nil {
		return err
	}
	defer s.single.close()

	s.spool = s.cfg.Spool
	var shipSpool *recorder.Spool
	if s.spool == nil {
		var configured []string
		if s.cfg.Playback != nil {
			configured = s.cfg.Playback.SpoolRecipients
		}
		s.spoolKeys, err = openSpoolKeys(ctx, s.cfg.DataDir, configured, rand.Reader, s.log) // spoolkeys.go
		if err != nil {
			return err
		}
		sp, err := recorder.OpenSpool(ctx, recorder.SpoolConfig{
			Dir: SpoolDir(s.cfg.DataDir), Now: s.cfg.Now, Logger: s.log, Rand: s.cfg.Rand, Redaction: s.redact,
			FlushInterval: liveFlushInterval, // live.go
			Recipients:    s.spoolKeys.recipients,
		})
		if err != nil {
			return fmt.Errorf("agent: open spool: %w", err)
		}
		defer sp.Close()
		s.spool = RecorderSpool(sp)
		shipSpool = sp
	}

	s.unrec, err = openUnrecorded(s.cfg.DataDir, s.cfg.Rand, s.log)
	if err != nil {
		return err
	}

	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var bgWG sync.WaitGroup
	bgWG.Go(func() { s.deliverUnrecorded(bg) })
	bgWG.Go(func() { s.renewLoop(bg) })
	bgWG.Go(func() { s.revocationLoop(bg) })
	bgWG.Go(func() { s.learnReplicasLoop(bg) }) // replicas.go
	bgWG.Go(func() { s.flagReportLoop(bg) })    // flagreport.go
	if shipSpool != nil && s.cfg.Playback != nil {
		bgWG.Go(func() { s.ship(bg, shipSpool) })
	}
	defer func() {
		stopBg()
		bgWG.Wait()
	}()

	s.log.InfoContext(ctx, "agent: serving", "addr", ln.Addr().String(), "tier", s.cfg.Tier,
		"serial", id.cert.Serial, "valid_before", time.Unix(int64(id.cert.ValidBefore), 0).UTC(),
		"user_ca_limits", describeLimits(id), "max_startups", s.cfg.MaxStartups.String(),
		"max_startups_per_source", s.cfg.MaxStartupsPerSource, "per_source_penalty", s.cfg.PerSourcePenalty.String())

	var connWG sync.WaitGroup
	close(s.ready)
	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccept()
	err = s.acceptLoop(ctx, ln, &connWG)

	// Sessions are told whether the agent stops or restarts (Serve's
	// context cancelled with ErrRestarting as its cause).
	end := ErrShuttingDown
	if errors.Is(context.Cause(ctx), ErrRestarting) {
		end = ErrRestarting
	}
	s.endAll(end)
	connWG.Wait()
	if ctx.Err() != nil {
		return ErrServerClosed
	}
	return err
}

func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) error {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.WarnContext(ctx, "agent: accept failed; retrying", "err", err, "retry_in", backoff.String())
				if !sleep(ctx, backoff) {
					return nil
				}
				continue
			}
			return fmt.Errorf("agent: accept: %w", err)
		}
		backoff = 0
		src := sourceOf(nc.RemoteAddr())
		if drop := s.preauth.admit(src, s.cfg.Now()); drop != "" {
			// Closed before it costs a goroutine or a key exchange.
			nc.Close()
			s.logPreauth(ctx, "dropped", drop, src)
			continue
		}
		wg.Go(func() { s.handleConn(ctx, nc, src) })
	}
}

// preauthLogEvery rate-limits the warning about pre-auth drops: a flood
// must not flood the log too.
const preauthLogEvery = 10 * time.Second

// logPreauth warns, at most every preauthLogEvery, what the
// pre-authentication limits dropped since the last warning.
func (s *Server) logPreauth(ctx context.Context, what, why string, src netip.Prefix) {
	since, ok := s.preauth.summary(s.cfg.Now(), preauthLogEvery)
	if !ok {
		return
	}
	s.log.WarnContext(ctx, "agent: pre-authentication limits closed connections", "last", what+" ("+why+")",
		"source", src.String(), "dropped_per_source", since.DroppedPerSource, "dropped_startups", since.DroppedStartups,
		"dropped_penalty", since.DroppedPenalty,
		"banner_timeouts", since.BannerTimeouts, "handshake_timeouts", since.HandshakeTimeouts,
		"unauthenticated", since.Unauthenticated)
}

// serverConn is one authenticated SSH connection.
type serverConn struct {
	srv    *Server
	id     string
	sconn  *ssh.ServerConn
	g      *grant
	ctx    context.Context // ends when the connection must end; Cause says why
	cancel context.CancelCauseFunc
	log    *slog.Logger

	sessions atomic.Int32 // open session channels
	nextChan atomic.Int32 // numbers session ids within the connection
	fwd      forwards     // remote (tcpip-forward) listeners
	wg       sync.WaitGroup
}

// handleConn serves one connection that admit counted as unauthenticated
// from src.
func (s *Server) handleConn(ctx context.Context, nc net.Conn, src netip.Prefix) {
	defer nc.Close()
	released := false
	release := func() {
		if !released {
			released = true
			s.preauth.release(src)
		}
	}
	defer release()
	id, err := s.newID()
	if err != nil {
		s.log.Error("agent: connection id", "err", err)
		return
	}
	ca := &connAuth{id: id}
	start := time.Now()
	bc := newBannerConn(nc, start.Add(s.cfg.BannerTimeout), start.Add(s.cfg.HandshakeTimeout))
	// Shutting down ends handshakes at once rather than at their deadline.
	stopClose := context.AfterFunc(ctx, func() { nc.Close() })
	sconn, chans, reqs, err := ssh.NewServerConn(bc, s.serverConfig(ca))
	stopClose()
	release()
	s.settle(ca, err == nil)
	if err != nil {
		if bc.timedOut.Load() {
			banner := !bc.seen.Load()
			s.preauth.timedOut(src, banner, s.cfg.Now())
			what := "handshake timeout"
			if banner {
				what = "banner timeout"
			}
			s.logPreauth(ctx, "closed", what, src)
		}
		s.log.Debug("agent: handshake ended", "session_id", ca.id, "client", nc.RemoteAddr().String(), "err", err)
		return
	}
	_ = nc.SetDeadline(time.Time{})
	g, _ := sconn.Permissions.ExtraData[grantKey{}].(*grant)
	if g == nil {
		sconn.Close()
		return
	}
	// Only the agent ends a connection's context, always with a cause:
	// Serve's ctx ending becomes ErrShuttingDown through endAll.
	cctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(errClientGone)
	c := &serverConn{srv: s, id: ca.id, sconn: sconn, g: g, ctx: cctx, cancel: cancel}
	c.log = c.logger(ca.id)
	s.track(c, true)
	defer s.track(c, false)

	if g.settings.EndOnExpiry && g.cert.ValidBefore != ssh.CertTimeInfinity {
		left := time.Unix(int64(g.cert.ValidBefore), 0).Sub(s.cfg.Now())
		t := time.AfterFunc(left, func() { cancel(expiredCause(g.cert)) })
		defer t.Stop()
	}
	if g.settings.EndOnExpiry && s.revs.Load().revoked(g.cert) {
		cancel(revokedCause(s.revs.Load(), g.cert)) // revoked between admission and now
	}
	c.log.Info("agent: connection admitted", "client", g.clientAddr, "identity", g.identity)

	// When the agent ends the connection, its sessions get a moment to
	// tell the user why and finish their recordings; then it closes.
	stop := context.AfterFunc(cctx, func() { c.closeAfterSessions(endGrace) })
	defer stop()
	c.wg.Go(func() { c.globalRequests(reqs) })
	c.wg.Go(func() {
		err := sconn.Wait()
		cancel(errClientGone)
		c.log.Debug("agent: connection closed", "err", err)
	})
	for nch := range chans {
		c.openChannel(nch)
	}
	cancel(errClientGone)
	sconn.Close()
	c.fwd.closeAll()
	c.wg.Wait()
}

// endGrace bounds how long sessions ended by the agent take to stop their
// processes and recordings before the connection is closed under them.
const endGrace = 5 * time.Second

func (c *serverConn) closeAfterSessions(grace time.Duration) {
	if !errors.Is(context.Cause(c.ctx), errClientGone) {
		deadline := time.Now().Add(grace)
		for c.sessions.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	c.sconn.Close()
}

// logger returns a logger with the fixed keys, for the connection or one
// of its sessions.
func (c *serverConn) logger(sessionID string) *slog.Logger {
	g := c.g
	return c.srv.log.With("session_id", sessionID, "serial", g.cert.Serial, "key_id", g.cert.KeyId,
		"principal", g.login, "tier", g.tier)
}

// openChannel dispatches a channel-open request (RFC 4254 section 5.1).
func (c *serverConn) openChannel(nch ssh.NewChannel) {
	switch nch.ChannelType() {
	case "session":
		if c.ctx.Err() != nil {
			_ = nch.Reject(ssh.Prohibited, "connection is ending")
			return
		}
		if int(c.sessions.Load()) >= c.srv.cfg.MaxSessions {
			_ = nch.Reject(ssh.ResourceShortage, "too many sessions on this connection")
			return
		}
		if c.g.singleUse && c.nextChan.Load() > 0 {
			c.refuseRequest("session", "single-use certificate: one session per certificate", "")
			_ = nch.Reject(ssh.Prohibited, "this certificate allows one session only")
			return
		}
		ch, reqs, err := nch.Accept()
		if err != nil {
			return
		}
		n := c.nextChan.Add(1)
		c.sessions.Add(1)
		c.wg.Go(func() {
			defer c.sessions.Add(-1)
			newSession(c, n, ch, reqs).run()
		})
	case "direct-tcpip":
		c.wg.Go(func() { c.directTCPIP(nch) })
	case "x11", "auth-agent@openssh.com", "forwarded-tcpip":
		// Channels only a server opens towards a client.
		c.refuseRequest(nch.ChannelType(), "channel type the client may not open", "")
		_ = nch.Reject(ssh.Prohibited, "not permitted")
	default:
		_ = nch.Reject(ssh.UnknownChannelType, "unknown channel type")
	}
}

// globalRequests answers connection-level requests (RFC 4254 section 4).
func (c *serverConn) globalRequests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		switch r.Type {
		case "tcpip-forward":
			c.tcpipForward(r)
		case "cancel-tcpip-forward":
			c.cancelTCPIPForward(r)
		default:
			// keepalive@openssh.com and anything unknown: a failure reply
			// is the answer OpenSSH's sshd gives and clients expect.
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	}
}

// refuseRequest logs and audits a channel or request the certificate does
// not permit; the caller answers the client.
func (c *serverConn) refuseRequest(what, reason, sessionID string) {
	if sessionID == "" {
		sessionID = c.id
	}
	g := c.g
	c.logger(sessionID).Warn("agent: request refused", "request", what, "reason", reason)
	c.srv.audit(c.ctx, AuditEvent{Action: AuditRequestRefused, SessionID: sessionID, Serial: g.cert.Serial,
		KeyID: g.cert.KeyId, Principal: g.login, Tier: g.tier, ClientAddr: g.clientAddr,
		Reason: reason, Detail: what})
}

func (s *Server) track(c *serverConn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
		if s.closing != nil {
			c.cancel(s.closing)
		}
	} else {
		delete(s.conns, c)
	}
}

func (s *Server) liveConns() []*serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

// endAll ends every connection with cause, and those admitted later.
func (s *Server) endAll(cause error) {
	s.mu.Lock()
	s.closing = cause
	s.mu.Unlock()
	for _, c := range s.liveConns() {
		c.cancel(cause)
	}
}

// endRevokedSessions ends the connections whose certificate the current
// list revokes, where the tier says sessions end on revocation.
func (s *Server) endRevokedSessions(ctx context.Context) {
	revs := s.revs.Load()
	for _, c := range s.liveConns() {
		if !revs.revoked(c.g.cert) {
			continue
		}
		if c.g.settings.EndOnExpiry {
			c.log.WarnContext(ctx, "agent: ending the sessions of a revoked certificate")
			c.cancel(revokedCause(revs, c.g.cert))
		} else {
			c.log.WarnContext(ctx, "agent: a revoked certificate has a live connection; its tier lets it run")
		}
	}
}

// newID returns a random id usable as a recording's session id.
func (s *Server) newID() (string, error) {
	var b [12]byte
	if _, err := io.ReadFull(s.cfg.Rand, b[:]); err != nil {
		return "", fmt.Errorf("agent: random id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Sessions returns the connections and session channels open now.
func (s *Server) Sessions() (conns, sessions int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		conns++
		sessions += int(c.sessions.Load())
	}
	return conns, sessions
}

// Readiness reports whether the agent admits sessions now: it has joined
// and listens, and its host certificate is valid (for the metrics
// listener's GET /readyz).
func (s *Server) Readiness(context.Context) error {
	select {
	case <-s.ready:
	default:
		return errors.New("not serving yet (joining the CA or opening the spool)")
	}
	c := s.HostCertificate()
	if c == nil {
		return errors.New("no host certificate")
	}
	if now := s.cfg.Now(); now.After(time.Unix(int64(c.ValidBefore), 0)) {
		return errors.New("the host certificate expired: the agent cannot renew it (is the CA reachable?)")
	}
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing != nil {
		return fmt.Errorf("stopping: %v", closing)
	}
	return nil
}
