package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// A CA may run as several replicas (sshward-ca serve on one etcd cluster).
// Config.URL then names them all, comma-separated, and the client fails
// over by itself:
//
//   - It is sticky: every request goes first to the replica that answered
//     last, so a client does not spread its requests for no reason.
//   - A replica that fails at the transport level (refused, reset, dial or
//     TLS handshake timeout, a certificate that does not verify against the
//     pinned root) is marked down for Config.ReplicaDownFor and tried only
//     after the others; after that it is a candidate again ("retried later").
//   - A replica presenting another CA's certificate is refused like a dead
//     one: it is never trusted, the request goes to the next replica.
//
// What is retried on another replica:
//
//   - Safe and idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS) after
//     any transport error, and after a 502/503/504 answer (a proxy in front,
//     or a replica that cannot reach its store).
//   - Everything else (POST: issuance, join, renewal, login, approvals,
//     claims, reports) only when the request never reached the replica: the
//     connection failed before the whole request was written (refused, TLS
//     refused, reset while dialling). Once the request is written, a lost
//     answer is returned to the caller as an error, never replayed: the
//     replica may have issued a certificate, spent a join token or a TOTP
//     code. The caller decides (the agent's renewal loop retries later with
//     a fresh signature, which issues at most one more certificate and
//     never spends a one-time credential twice because those are refused
//     once spent).

// Replica failover defaults.
const (
	defaultReplicaDownFor = 30 * time.Second
	defaultDialTimeout    = 5 * time.Second
)

// SplitURLs splits a comma-separated list of CA URLs, trimming spaces and
// trailing slashes, and checks each is an absolute URL.
func SplitURLs(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimRight(strings.TrimSpace(part), "/")
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil || u.Host == "" || u.Scheme == "" {
			return nil, fmt.Errorf("client: URL %q is not a valid URL", part)
		}
		out = append(out, part)
	}
	if len(out) == 0 {
		return nil, errors.New("client: URL is required")
	}
	return out, nil
}

// endpoint is one CA replica.
type endpoint struct {
	base string
	hc   *http.Client
}

// endpoints is the replica set a Client (and its WithToken copies) shares.
type endpoints struct {
	downFor time.Duration
	now     func() time.Time
	log     *slog.Logger

	mu   sync.Mutex  // guards list, cur and down
	list []*endpoint // grows only (LearnReplicas), never reordered
	cur  int
	down []time.Time // per replica: skipped (tried last) until then
}

// snapshot returns the replicas to try (indexes into the returned list):
// the sticky one first, then the others in list order, replicas marked
// down last.
func (e *endpoints) snapshot() ([]int, []*endpoint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.orderLocked(), e.list
}

func (e *endpoints) orderLocked() []int {
	n := len(e.list)
	if n == 1 {
		return []int{0}
	}
	now := e.now()
	up := make([]int, 0, n)
	var down []int
	for k := range n {
		i := (e.cur + k) % n
		if now.Before(e.down[i]) {
			down = append(down, i)
		} else {
			up = append(up, i)
		}
	}
	return append(up, down...)
}

// good makes replica i the sticky one.
func (e *endpoints) good(i int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.list) == 1 {
		return
	}
	if e.cur != i {
		e.log.Info("client: CA replica in use", "url", e.list[i].base, "was", e.list[e.cur].base)
	}
	e.cur = i
	e.down[i] = time.Time{}
}

// fail marks replica i down for downFor.
func (e *endpoints) fail(i int, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.list) == 1 {
		return
	}
	e.down[i] = e.now().Add(e.downFor)
	e.log.Warn("client: CA replica failed; trying the others", "url", e.list[i].base, "err", err, "retry_after", e.downFor)
}

// retryableMethod reports whether a request of method may be sent again to
// another replica after it may have reached one (RFC 9110 idempotent).
func retryableMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// retryableStatus reports an answer that says the replica could not serve
// the request (a proxy's, or an unready replica's).
func retryableStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// URLs returns the CA replicas this client talks to, the one in use first.
func (c *Client) URLs() []string {
	var out []string
	order, list := c.eps.snapshot()
	for _, i := range order {
		out = append(out, list[i].base)
	}
	return out
}

// LearnReplicas adds the CA replicas a trust bundle names (ca_replicas) to
// the ones this client was configured with: they are tried after those,
// with the same trust (the saved root, or the pinned fingerprint), so a
// URL learned from a replica buys no trust of its own. It returns the
// URLs it added.
func (c *Client) LearnReplicas(urls []string) []string {
	if c.cfg.HTTPClient != nil {
		return nil // one transport for every URL: nothing per replica to set up
	}
	var fresh []*endpoint
	for _, u := range urls {
		clean, err := SplitURLs(u)
		if err != nil || len(clean) != 1 || !strings.HasPrefix(clean[0], "https://") {
			continue
		}
		hc, err := c.transportFor(clean[0])
		if err != nil {
			continue
		}
		fresh = append(fresh, &endpoint{base: clean[0], hc: hc})
	}
	e := c.eps
	e.mu.Lock()
	defer e.mu.Unlock()
	var added []string
	for _, ep := range fresh {
		if slices.ContainsFunc(e.list, func(have *endpoint) bool { return have.base == ep.base }) {
			continue
		}
		// A new slice: snapshots taken before keep theirs.
		e.list = append(slices.Clip(e.list), ep)
		e.down = append(slices.Clip(e.down), time.Time{})
		added = append(added, ep.base)
	}
	if len(added) > 0 {
		e.log.Info("client: learned CA replicas from the trust bundle", "urls", strings.Join(added, ","))
	}
	return added
}

// WithToken returns a copy of c that sends tok as its Bearer credential and
// shares c's transport and replica state (stickiness, replicas marked down).
func (c *Client) WithToken(tok string) *Client {
	cp := &Client{cfg: c.cfg, eps: c.eps, rootState: c.rootState}
	cp.cfg.Token = tok
	return cp
}

// replicaErr wraps the errors of every replica tried.
type replicaErr struct {
	urls []string
	errs []error
}

func (r *replicaErr) Error() string {
	var b strings.Builder
	b.WriteString("no CA replica answered (")
	for i, err := range r.errs {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %v", r.urls[i], err)
	}
	b.WriteString(")")
	return b.String()
}

func (r *replicaErr) Unwrap() []error { return r.errs }

// attemptCtx bounds one attempt; callers' ctx still wins.
func attemptCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
