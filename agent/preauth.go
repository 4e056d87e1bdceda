package agent

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Pre-authentication limits (issue 8 §4), after OpenSSH sshd's MaxStartups,
// PerSourceMaxStartups and LoginGraceTime: a connection that has not
// authenticated yet costs the agent a goroutine and a key exchange, and
// costs an attacker nothing. So
//
//   - one source (an IPv4 address, an IPv6 /64) may hold at most
//     Config.MaxStartupsPerSource unauthenticated connections; more are
//     closed as soon as they are accepted;
//   - past Config.MaxStartups.Begin unauthenticated connections in all, new
//     ones are dropped at random, Rate percent at Begin rising to all of
//     them at Full;
//   - a client must send its SSH version line within Config.BannerTimeout
//     and finish key exchange and authentication within
//     Config.HandshakeTimeout;
//   - each connection closed by one of those timeouts adds
//     Config.PerSourcePenalty to its source's penalty (sshd's
//     PerSourcePenalties grace-exceeded); while a source's penalty exceeds
//     penaltyMin, its connections are closed at accept, uncounted. One slow
//     connection costs nothing; a source that keeps slots idle is shut out
//     for up to penaltyMax.
//
// A flood from one address therefore holds at most MaxStartupsPerSource
// slots for at most BannerTimeout, then none; many flooding addresses are
// shut out the same way after their first round, so MaxStartups' random
// drop does not go on hitting everyone else. Dropped connections are
// closed without a word, as sshd does.

// StartupLimits is sshd's MaxStartups "begin:rate:full" for unauthenticated
// connections.
type StartupLimits struct {
	// Begin is the number of unauthenticated connections from which new
	// ones are dropped at random.
	Begin int
	// Rate is the percentage dropped at Begin; it rises linearly to 100 at
	// Full.
	Rate int
	// Full is the number of unauthenticated connections at which every new
	// one is dropped.
	Full int
}

// String formats l as "begin:rate:full".
func (l StartupLimits) String() string { return fmt.Sprintf("%d:%d:%d", l.Begin, l.Rate, l.Full) }

// ParseStartupLimits reads "begin:rate:full" (sshd_config MaxStartups) or a
// single number N, which means N:100:N (a hard cap).
func ParseStartupLimits(s string) (StartupLimits, error) {
	parts := strings.Split(s, ":")
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return StartupLimits{}, fmt.Errorf("agent: max startups %q: want begin:rate:full, e.g. %s", s, DefaultMaxStartups())
		}
		nums[i] = n
	}
	var l StartupLimits
	switch len(nums) {
	case 1:
		l = StartupLimits{Begin: nums[0], Rate: 100, Full: nums[0]}
	case 3:
		l = StartupLimits{Begin: nums[0], Rate: nums[1], Full: nums[2]}
	default:
		return StartupLimits{}, fmt.Errorf("agent: max startups %q: want begin:rate:full, e.g. %s", s, DefaultMaxStartups())
	}
	if err := l.check(); err != nil {
		return StartupLimits{}, err
	}
	return l, nil
}

func (l StartupLimits) check() error {
	if l.Begin < 1 || l.Full < l.Begin || l.Rate < 0 || l.Rate > 100 {
		return fmt.Errorf("agent: max startups %s: want 1 ≤ begin ≤ full and a rate from 0 to 100", l)
	}
	return nil
}

// Bounds of the per-source penalties (sshd's PerSourcePenalties min and max).
const (
	penaltyMin = 15 * time.Second
	penaltyMax = 10 * time.Minute
	// maxPenalized bounds the sources remembered; when full, new ones go
	// unpenalized (sshd's overflow:permissive) rather than evicting.
	maxPenalized = 65536
)

// PreauthStats counts what the pre-authentication limits did since Serve
// started.
type PreauthStats struct {
	// Unauthenticated is the number of connections not authenticated yet.
	Unauthenticated int `json:"unauthenticated"`
	// DroppedPerSource were closed at accept: their source held
	// MaxStartupsPerSource unauthenticated connections already.
	DroppedPerSource uint64 `json:"dropped_per_source"`
	// DroppedStartups were closed at accept by MaxStartups (random early
	// drop or full).
	DroppedStartups uint64 `json:"dropped_startups"`
	// DroppedPenalty were closed at accept: their source is penalized.
	DroppedPenalty uint64 `json:"dropped_penalty"`
	// Penalized is the number of sources under a penalty now; Blocked
	// those whose penalty exceeds the 15 s grace, whose connections are
	// closed at accept.
	Penalized int `json:"penalized"`
	Blocked   int `json:"blocked"`
	// BannerTimeouts sent no SSH version line within BannerTimeout.
	BannerTimeouts uint64 `json:"banner_timeouts"`
	// HandshakeTimeouts did not authenticate within HandshakeTimeout.
	HandshakeTimeouts uint64 `json:"handshake_timeouts"`
}

// preauth tracks unauthenticated connections. Owned by the Server.
type preauth struct {
	perSource int
	lim       StartupLimits
	penalty   time.Duration // per timeout; ≤ 0: no penalties

	mu       sync.Mutex // guards the fields below
	rnd      *rand.Rand
	total    int
	bySource map[netip.Prefix]int
	until    map[netip.Prefix]time.Time // penalized sources: until when
	stats    PreauthStats               // counters; Unauthenticated and Penalized are computed
	lastWarn time.Time                  // last summary logged, to rate-limit the log
	warned   PreauthStats               // counters at lastWarn
}

func newPreauth(perSource int, lim StartupLimits, penalty time.Duration, seed [32]byte) *preauth {
	return &preauth{perSource: perSource, lim: lim, penalty: penalty, rnd: rand.New(rand.NewChaCha8(seed)),
		bySource: map[netip.Prefix]int{}, until: map[netip.Prefix]time.Time{}}
}

// sourceOf is the bucket a remote address counts against: its IPv4
// address, or its IPv6 /64 (one host usually holds a whole /64). Not an IP
// address: the zero Prefix, which no per-source cap applies to.
func sourceOf(addr net.Addr) netip.Prefix {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// admit counts a new connection from src as unauthenticated, or returns
// why it must be dropped.
func (p *preauth) admit(src netip.Prefix, now time.Time) (drop string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if until, ok := p.until[src]; ok {
		if until.Sub(now) > penaltyMin {
			p.stats.DroppedPenalty++
			return "source penalized"
		}
		if !until.After(now) {
			delete(p.until, src)
		}
	}
	if src.IsValid() && p.bySource[src] >= p.perSource {
		p.stats.DroppedPerSource++
		return "per-source limit"
	}
	if p.dropStartupLocked() {
		p.stats.DroppedStartups++
		return "max startups"
	}
	p.total++
	if src.IsValid() {
		p.bySource[src]++
	}
	return ""
}

// dropStartupLocked is sshd's drop_connection: never below Begin, always
// at Full, in between with a probability from Rate to 100%.
func (p *preauth) dropStartupLocked() bool {
	n, l := p.total, p.lim
	switch {
	case n < l.Begin:
		return false
	case n >= l.Full:
		return true
	}
	pct := 100 - l.Rate
	pct = pct*(n-l.Begin)/(l.Full-l.Begin) + l.Rate
	return p.rnd.IntN(100) < pct
}

// release ends a connection's unauthenticated time (authenticated, failed
// or timed out).
func (p *preauth) release(src netip.Prefix) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total--
	if src.IsValid() {
		if p.bySource[src]--; p.bySource[src] <= 0 {
			delete(p.bySource, src)
		}
	}
}

// timedOut counts a connection from src closed by a pre-auth timeout and
// adds the penalty to src.
func (p *preauth) timedOut(src netip.Prefix, banner bool, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if banner {
		p.stats.BannerTimeouts++
	} else {
		p.stats.HandshakeTimeouts++
	}
	if p.penalty <= 0 || !src.IsValid() {
		return
	}
	until, ok := p.until[src]
	if !ok && len(p.until) >= maxPenalized {
		for k, u := range p.until {
			if !u.After(now) {
				delete(p.until, k)
			}
		}
		if len(p.until) >= maxPenalized {
			return
		}
	}
	if until.Before(now) {
		until = now
	}
	until = until.Add(p.penalty)
	if limit := now.Add(penaltyMax); until.After(limit) {
		until = limit
	}
	p.until[src] = until
}

func (p *preauth) snapshot(now time.Time) PreauthStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.Unauthenticated = p.total
	st.Penalized = len(p.until)
	for _, until := range p.until {
		if until.Sub(now) > penaltyMin {
			st.Blocked++
		}
	}
	return st
}

// summary returns what was dropped since the last summary, at most once
// per interval; ok is false when there is nothing to say yet.
func (p *preauth) summary(now time.Time, interval time.Duration) (since PreauthStats, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.lastWarn) < interval {
		return PreauthStats{}, false
	}
	cur := p.stats
	since = PreauthStats{
		Unauthenticated:   p.total,
		DroppedPerSource:  cur.DroppedPerSource - p.warned.DroppedPerSource,
		DroppedStartups:   cur.DroppedStartups - p.warned.DroppedStartups,
		DroppedPenalty:    cur.DroppedPenalty - p.warned.DroppedPenalty,
		BannerTimeouts:    cur.BannerTimeouts - p.warned.BannerTimeouts,
		HandshakeTimeouts: cur.HandshakeTimeouts - p.warned.HandshakeTimeouts,
	}
	if since.DroppedPerSource+since.DroppedStartups+since.DroppedPenalty+since.BannerTimeouts+since.HandshakeTimeouts == 0 {
		return PreauthStats{}, false
	}
	p.lastWarn, p.warned = now, cur
	return since, true
}

// bannerConn is a connection before authentication: reads must bring the
// client's SSH version line (RFC 4253 section 4.2) before bannerDeadline,
// and everything else before the handshake deadline, which the caller set
// on the connection. The SSH transport reads from one goroutine at a time.
type bannerConn struct {
	net.Conn
	handshakeDeadline time.Time
	line              []byte      // the start of the current line, ≤ 4 bytes
	seen              atomic.Bool // the version line arrived
	timedOut          atomic.Bool // a read hit a deadline
}

func newBannerConn(nc net.Conn, bannerDeadline, handshakeDeadline time.Time) *bannerConn {
	_ = nc.SetDeadline(handshakeDeadline)
	if bannerDeadline.Before(handshakeDeadline) {
		_ = nc.SetReadDeadline(bannerDeadline)
	}
	return &bannerConn{Conn: nc, handshakeDeadline: handshakeDeadline}
}

func (b *bannerConn) Read(p []byte) (int, error) {
	n, err := b.Conn.Read(p)
	if !b.seen.Load() {
		for _, c := range p[:n] {
			if c != '\n' {
				if len(b.line) < 4 {
					b.line = append(b.line, c)
				}
				continue
			}
			if bytes.HasPrefix(b.line, []byte("SSH-")) {
				// Lines before the version line do not buy time.
				b.seen.Store(true)
				_ = b.Conn.SetReadDeadline(b.handshakeDeadline)
				break
			}
			b.line = b.line[:0]
		}
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.timedOut.Store(true)
	}
	return n, err
}
