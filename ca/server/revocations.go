package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// DefaultRevocationHeartbeat is how often an idle revocation stream says it
// is alive; watchers give up on a stream silent for a few of these.
const DefaultRevocationHeartbeat = 10 * time.Second

// maxWatchesPerHost bounds the streams one host certificate (or playback
// certificate) holds open: an agent needs one, a reconnect briefly two; a
// stolen host key must not hold thousands of connections.
const maxWatchesPerHost = 4

// revocationBatch bounds how many log entries one store read returns.
const revocationBatch = 512

// watchers counts open revocation streams per watcher identity.
type watchers struct {
	mu sync.Mutex // guards n
	n  map[string]int
}

func (w *watchers) acquire(who string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == nil {
		w.n = map[string]int{}
	}
	if w.n[who] >= maxWatchesPerHost {
		return false
	}
	w.n[who]++
	return true
}

func (w *watchers) release(who string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n[who]--; w.n[who] <= 0 {
		delete(w.n, who)
	}
}

func (s *Server) revocationRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathHostRevocationsWatch, s.handleWatchRevocations)
	mux.HandleFunc("POST "+api.PathSessionsTerminate, s.handleTerminate) // terminate.go
	mux.HandleFunc("POST "+api.PathHostFlags, s.withHost(s.handleFlag))  // terminate.go
}

// handleWatchRevocations streams revocations (see api.PathHostRevocationsWatch).
// Agents authenticate with their host certificate and watch their own
// tier; playback servers present their TLS client certificate and watch
// api.HostsScope.
func (s *Server) handleWatchRevocations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	scope := q.Get("tier")
	var since uint64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "since must be a revocation sequence number"})
			return
		}
		since = n
	}
	who, ok := s.authWatcher(w, r, scope)
	if !ok {
		return
	}
	tiers, err := s.a.RevocationTiers(scope)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !s.watches.acquire(who) {
		writeError(w, &api.Error{Code: api.CodeForbidden, Status: http.StatusTooManyRequests,
			Message: fmt.Sprintf("this host already holds %d revocation streams: close one", maxWatchesPerHost)})
		return
	}
	defer s.watches.release(who)

	ctx := r.Context()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(ev api.RevocationEvent) error {
		// A watcher that stops reading must not hold the handler for ever.
		_ = rc.SetWriteDeadline(time.Now().Add(3 * s.heartbeat))
		if err := enc.Encode(ev); err != nil {
			return err
		}
		return rc.Flush()
	}
	changed := s.a.RevocationsChanged()
	trustChanged := s.a.TrustChanged()
	head, err := s.a.RevocationHead(ctx)
	if err != nil {
		s.log.Error("revocation stream", "err", err)
		return
	}
	if err := send(api.RevocationEvent{Type: api.EventHello, Seq: since, Heartbeat: api.Duration(s.heartbeat), Flags: s.a.FlagRuleSet(scope), Trust: s.hostTrust(scope)}); err != nil {
		return
	}
	pos := since
	if since == 0 || since > head {
		// A new watcher, or one that saw more than this CA's log holds
		// (a store restored from backup): the whole list. Watchers merge
		// it into theirs, so nothing they know is un-revoked.
		list, err := s.a.RevocationSnapshot(ctx, scope)
		if err != nil {
			s.log.Error("revocation stream: snapshot", "err", err)
			return
		}
		if err := send(api.RevocationEvent{Type: api.EventSnapshot, Seq: list.Seq, List: list}); err != nil {
			return
		}
		pos = list.Seq
	}
	s.log.Debug("revocation stream opened", "watcher", who, "scope", scope, "since", since)
	tick := time.NewTicker(s.heartbeat)
	defer tick.Stop()
	var termPos uint64
	for {
		evs, scanned, more, err := s.a.RevocationsSince(ctx, tiers, pos, revocationBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("revocation stream", "err", err)
			}
			return
		}
		for _, ev := range evs {
			if err := send(ev); err != nil {
				return
			}
		}
		pos = scanned
		if more {
			continue
		}
		// Terminate orders for the watched tiers (terminate.go).
		var terms <-chan struct{}
		if termPos, terms, err = s.sendTerminateOrders(send, tiers, termPos, pos); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-terms:
		case <-changed:
			changed = s.a.RevocationsChanged() // before the next read
		case <-trustChanged:
			// A key rotated or retired (rotate.go).
			trustChanged = s.a.TrustChanged()
			if t := s.hostTrust(scope); t != nil {
				if err := send(api.RevocationEvent{Type: api.EventTrust, Seq: pos, Trust: t}); err != nil {
					return
				}
			}
		case <-tick.C:
			if err := send(api.RevocationEvent{Type: api.EventHeartbeat, Seq: pos}); err != nil {
				return
			}
		}
	}
}

// authWatcher authenticates a revocation watcher and checks it may watch
// scope; it answers the refusal itself.
func (s *Server) authWatcher(w http.ResponseWriter, r *http.Request, scope string) (string, bool) {
	if r.Header.Get("Authorization") != "" {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
		if err != nil {
			writeError(w, tooLarge(err))
			return "", false
		}
		cert, err := s.hosts.Verify(r, body)
		if err != nil {
			s.log.Warn("host auth refused", "path", r.URL.Path, "client", clientIP(r), "reason", err.Error())
			writeError(w, hostAuthFailed)
			return "", false
		}
		if s.refuseRevokedHost(w, r, cert) {
			return "", false
		}
		hostTier, err := s.a.HostTier(r.Context(), cert.Serial)
		if err != nil {
			s.fail(w, r, err)
			return "", false
		}
		if scope != hostTier {
			writeError(w, &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden, Message: fmt.Sprintf("this host belongs to tier %s, not %s", hostTier, scope)})
			return "", false
		}
		return "host:" + strconv.FormatUint(cert.Serial, 10), true
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		name, err := s.a.VerifyPlaybackClient(r.TLS.PeerCertificates)
		if err != nil {
			s.log.Warn("revocation stream: client certificate refused", "client", clientIP(r), "reason", err.Error())
			writeError(w, &api.Error{Code: api.CodeUnauthenticated, Status: http.StatusUnauthorized, Message: "the TLS client certificate is not from this CA"})
			return "", false
		}
		if scope != api.HostsScope {
			writeError(w, &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden, Message: "a playback server watches tier " + api.HostsScope})
			return "", false
		}
		return "playback:" + name + ":" + r.TLS.PeerCertificates[0].SerialNumber.Text(16), true
	}
	writeError(w, &api.Error{Code: api.CodeUnauthenticated, Status: http.StatusUnauthorized,
		Message: "the revocation stream needs a host certificate signature or a playback server's TLS client certificate"})
	return "", false
}

// hostAuthFailed answers a request whose host signature does not verify.
var hostAuthFailed = &api.Error{Code: api.CodeUnauthenticated, Status: http.StatusUnauthorized,
	Message: "host authentication failed: the host certificate is missing, expired, revoked or not from this CA"}

// refuseRevokedHost answers 403, with an audit record, a request whose
// host certificate verified (CA and request signatures) but is revoked,
// by serial or key id. It reports whether it refused. The check runs
// after verification, so the audit record names only what the host CA
// signed.
func (s *Server) refuseRevokedHost(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate) bool {
	if !s.a.IsHostCertRevoked(r.Context(), cert) {
		return false
	}
	s.a.AuditHostRefused(r.Context(), cert, r.Method+" "+r.URL.Path, clientIP(r), "host certificate revoked")
	writeError(w, &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden,
		Message: "this host's certificate was revoked: join the host again with a new token (sshward-ca join-token)"})
	return true
}
