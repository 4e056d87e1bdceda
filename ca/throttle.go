package ca

import (
	"net"
	"sync"
	"time"

	"github.com/sshward/sshward/ca/identity"
)

// loginThrottle slows down password and code guessing without letting a
// guesser lock anyone else out or learn which names exist. Failures count
// per (name, source address) — a guesser elsewhere never locks the real
// user out of their own address — and per source address across names,
// with a higher threshold, so one address cannot try many names quickly.
// Unknown names count exactly like known ones. It lives in memory: a CA
// restart forgets it, which costs a guesser nothing it did not have.
type loginThrottle struct {
	perUser identity.Lockout // per (name, address)
	perAddr identity.Lockout // per address, all names

	mu      sync.Mutex // guards entries
	entries map[string]throttleEntry
}

type throttleEntry struct {
	failures int
	last     time.Time
}

// maxThrottleEntries bounds the memory a flood of made-up names can take;
// past it, entries whose lock ended are dropped first.
const maxThrottleEntries = 100_000

func newLoginThrottle(l identity.Lockout) *loginThrottle {
	addr := l
	if addr.Threshold <= 0 {
		addr.Threshold = identity.DefaultLockoutThreshold
	}
	addr.Threshold *= 4
	return &loginThrottle{perUser: l, perAddr: addr, entries: map[string]throttleEntry{}}
}

func addrHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func throttleKeys(user, addr string) (userKey, addrKey string) {
	h := addrHost(addr)
	return "u\x00" + user + "\x00" + h, "a\x00" + h
}

// locked reports whether user may not try from addr now.
func (t *loginThrottle) locked(user, addr string, now time.Time) bool {
	uk, ak := throttleKeys(user, addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	u, a := t.entries[uk], t.entries[ak]
	return now.Before(t.perUser.Until(u.failures, u.last)) || now.Before(t.perAddr.Until(a.failures, a.last))
}

// fail counts a failed attempt.
func (t *loginThrottle) fail(user, addr string, now time.Time) {
	uk, ak := throttleKeys(user, addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.entries) >= maxThrottleEntries {
		t.pruneLocked(now)
	}
	for _, k := range []string{uk, ak} {
		e := t.entries[k]
		e.failures++
		e.last = now
		t.entries[k] = e
	}
}

// succeed forgets the failures of user from addr (not the address's).
func (t *loginThrottle) succeed(user, addr string) {
	uk, _ := throttleKeys(user, addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.entries, uk)
}

// pruneLocked drops entries that lock nothing any more, oldest state first.
func (t *loginThrottle) pruneLocked(now time.Time) {
	for k, e := range t.entries {
		l := t.perUser
		if k[0] == 'a' {
			l = t.perAddr
		}
		if !now.Before(l.Until(e.failures, e.last)) && now.Sub(e.last) > time.Minute {
			delete(t.entries, k)
		}
	}
	if len(t.entries) >= maxThrottleEntries { // still full: a flood; start over
		clear(t.entries)
	}
}
