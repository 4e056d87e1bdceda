package playback

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/tlsca"
)

// RevokedHosts follows the host certificates the CA revoked, by push: it
// holds the CA's revocation stream open (scope api.HostsScope, the
// playback server's TLS certificate as its identity), applies each
// revocation as it arrives, resumes from the last position after a
// reconnect, and notices a silent stream by its missing heartbeats. The
// playback server refuses uploads from a host it lists (Config.RevokedHosts).
type RevokedHosts struct {
	urls []string // the CA's replicas
	cur  int      // the one followed now; only Run touches it
	hc   *http.Client
	log  *slog.Logger

	mu      sync.RWMutex // guards the fields below
	serials map[uint64]bool
	keyIDs  map[string]bool
	seq     uint64
	synced  bool // a snapshot or resume reached us at least once
}

// NewRevokedHosts returns a follower of the CA at caURL (verified with
// rootPEM) that authenticates with cert, the playback server's TLS
// certificate from its join.
func NewRevokedHosts(caURL string, rootPEM []byte, cert tls.Certificate, log *slog.Logger) (*RevokedHosts, error) {
	tc, err := tlsca.ClientConfigFromPEM(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("playback: revoked hosts: %w", err)
	}
	tc.Certificates = []tls.Certificate{cert}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	urls, err := client.SplitURLs(caURL)
	if err != nil {
		return nil, fmt.Errorf("playback: revoked hosts: %w", err)
	}
	return &RevokedHosts{urls: urls, log: log, serials: map[uint64]bool{}, keyIDs: map[string]bool{},
		hc: &http.Client{Transport: &http.Transport{TLSClientConfig: tc, TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 10 * time.Second,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}}}, nil
}

// Revoked reports whether cert is a revoked host certificate.
func (r *RevokedHosts) Revoked(cert *ssh.Certificate) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.serials[cert.Serial] || r.keyIDs[cert.KeyId]
}

// Synced reports whether the CA's list reached this follower at least once.
func (r *RevokedHosts) Synced() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.synced
}

// Run follows the stream until ctx ends, reconnecting with backoff (0.5 s
// doubling to 30 s, reset by a healthy stream).
func (r *RevokedHosts) Run(ctx context.Context) {
	backoff := 500 * time.Millisecond
	failures := 0 // replicas failed in a row
	for ctx.Err() == nil {
		healthy, err := r.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if healthy {
			backoff, failures = 500*time.Millisecond, 0
		}
		// Another replica next (the stream resumes from the same
		// position: the revocation log is shared); back off only once
		// every replica failed.
		failures++
		r.log.WarnContext(ctx, "playback: revoked-hosts stream ended; reconnecting", "ca", r.urls[r.cur], "err", err, "retry_in", backoff)
		r.cur = (r.cur + 1) % len(r.urls)
		if failures < len(r.urls) {
			continue
		}
		failures = 0
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// follow reads one stream until it fails; healthy reports whether it
// delivered anything.
func (r *RevokedHosts) follow(ctx context.Context) (healthy bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.RLock()
	since := r.seq
	r.mu.RUnlock()
	q := url.Values{"tier": {api.HostsScope}, "since": {strconv.FormatUint(since, 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.urls[r.cur]+api.PathHostRevocationsWatch+"?"+q.Encode(), nil)
	if err != nil {
		return false, err
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("the CA answered %s", resp.Status)
	}
	// A stream silent for three heartbeats is dead: cancel it.
	// Until the hello says otherwise: the CA's default heartbeat. Read by
	// the watchdog, set by apply: atomic.
	var heartbeat atomic.Int64
	heartbeat.Store(int64(10 * time.Second))
	alive := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-alive:
			case <-time.After(3 * time.Duration(heartbeat.Load())):
				cancel()
				return
			}
		}
	}()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var ev api.RevocationEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return healthy, fmt.Errorf("malformed event: %w", err)
		}
		healthy = true
		select {
		case alive <- struct{}{}:
		default:
		}
		r.apply(ev, &heartbeat)
	}
	if err := sc.Err(); err != nil {
		return healthy, err
	}
	return healthy, fmt.Errorf("the CA closed the stream")
}

func (r *RevokedHosts) apply(ev api.RevocationEvent, heartbeat *atomic.Int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev.Type {
	case api.EventHello:
		if ev.Heartbeat > 0 {
			heartbeat.Store(int64(ev.Heartbeat))
		}
		if ev.Seq > 0 {
			r.synced = true // resuming: what we hold is current up to Seq
		}
	case api.EventSnapshot:
		if ev.List != nil {
			// Merged, never replaced: nothing known revoked is un-revoked.
			for _, s := range ev.List.Serials {
				r.serials[s] = true
			}
			for _, k := range ev.List.KeyIDs {
				r.keyIDs[k] = true
			}
		}
		r.synced = true
	case api.EventRevoke:
		if ev.Serial != 0 {
			r.serials[ev.Serial] = true
		} else if ev.KeyID != "" {
			r.keyIDs[ev.KeyID] = true
		}
	}
	if ev.Seq > r.seq {
		r.seq = ev.Seq
	}
}
