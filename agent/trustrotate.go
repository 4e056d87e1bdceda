package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// CA key rotation (issue 14). While a tier's user-CA key rotates, the CA
// names both keys, the old one with the time it retires
// (api.UserCALimit.NotAfter); the agent learns them from the revocation
// stream (api.EventTrust, and the hello) as well as from every host
// certificate answer. From NotAfter on, or once the CA stops naming the
// key, certificates it signed are refused with reasonRetiredCA, whether or
// not the CA can be reached: a stolen retired key mints nothing a host
// accepts.

const reasonRetiredCA = "certificate signed by a retired user CA key"

// retiredKeys remembers user-CA keys this agent trusted and no longer
// does, so that their certificates are refused with a reason that says
// so rather than as an unknown CA.
type retiredKeys struct {
	mu   sync.Mutex
	keys map[string]time.Time // marshalled key → when it retired
}

func (r *retiredKeys) add(k string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keys == nil {
		r.keys = map[string]time.Time{}
	}
	if _, ok := r.keys[k]; !ok {
		r.keys[k] = at
	}
}

func (r *retiredKeys) get(k string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.keys[k]
	return at, ok
}

// retiredAt reports whether caKey is a user-CA key that retired by now:
// past its NotAfter, or trusted before and dropped by the CA since.
func (s *Server) retiredAt(id *hostIdentity, caKey ssh.PublicKey, now time.Time) (time.Time, bool) {
	k := string(caKey.Marshal())
	if id.userCAs[k] {
		if l, ok := id.limits[k]; ok && !l.notAfter.IsZero() && !now.Before(l.notAfter) {
			return l.notAfter, true
		}
		return time.Time{}, false
	}
	return s.retired.get(k)
}

// setIdentity swaps in a new identity; keys the old one trusted and the
// new one does not are remembered as retired.
func (s *Server) setIdentity(h *hostIdentity) {
	s.noteRetired(s.id.Swap(h), h)
}

// noteRetired remembers the keys old trusted and h does not.
func (s *Server) noteRetired(old, h *hostIdentity) {
	if old != nil && h != nil {
		now := s.cfg.Now().UTC()
		for k := range old.userCAs {
			if !h.userCAs[k] {
				at := now
				if l, ok := old.limits[k]; ok && !l.notAfter.IsZero() && l.notAfter.Before(now) {
					at = l.notAfter
				}
				s.retired.add(k, at)
			}
		}
	}
}

// applyTrust takes the user-CA keys the CA says this host's tier trusts
// now: a rotation adds a key, a retirement drops one. The host certificate
// stays; the keys and limits are saved as a renewal saves them.
func (s *Server) applyTrust(ctx context.Context, t *api.HostTrust) {
	if t == nil || len(t.UserCA) == 0 {
		return
	}
	cur := s.identity()
	if cur == nil {
		return
	}
	resp := &api.HostCertResponse{
		Certificate: string(ssh.MarshalAuthorizedKey(cur.cert)), Serial: cur.cert.Serial, Names: cur.cert.ValidPrincipals,
		Tier: cur.tier, ValidBefore: time.Unix(int64(cur.cert.ValidBefore), 0).UTC(), UserCA: t.UserCA, UserCALimits: t.UserCALimits,
	}
	next, err := newIdentity(cur.key, resp.Certificate, t.UserCA, cur.tier)
	if err != nil {
		s.log.ErrorContext(ctx, "agent: the CA sent user CA keys that do not parse; keeping the current ones", "err", err)
		return
	}
	if next.limits, err = indexLimits(t.UserCALimits, next.userCAs); err != nil {
		s.log.ErrorContext(ctx, "agent: the CA sent user CA limits that do not parse; keeping the current ones", "err", err)
		return
	}
	if maps.Equal(next.userCAs, cur.userCAs) && maps.Equal(next.limits, cur.limits) {
		return
	}
	// A renewal that swapped in another identity meanwhile brought the
	// CA's keys too: keep it (and its files).
	if !s.id.CompareAndSwap(cur, next) {
		return
	}
	s.noteRetired(cur, next)
	if len(t.UserCALimits) > 0 {
		if err := saveLimits(&s.cfg, t.UserCALimits); err != nil {
			s.log.ErrorContext(ctx, "agent: cannot save user CA limits", "err", err)
		}
	}
	if err := saveIdentity(&s.cfg, resp, cur.tier); err != nil {
		s.log.ErrorContext(ctx, "agent: cannot save the trusted user CA keys", "err", err)
	}
	s.log.InfoContext(ctx, "agent: trusted user CA keys updated", "keys", describeKeys(next))
}

// describeKeys is a log value: "SHA256:…(production),SHA256:…(production until …)".
func describeKeys(id *hostIdentity) string {
	var parts []string
	for k := range id.userCAs {
		pub, err := ssh.ParsePublicKey([]byte(k))
		if err != nil {
			continue
		}
		l := id.limitFor(pub)
		p := fmt.Sprintf("%s(%s", ssh.FingerprintSHA256(pub), l.tier)
		if !l.notAfter.IsZero() {
			p += " until " + l.notAfter.UTC().Format(time.RFC3339)
		}
		parts = append(parts, p+")")
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}
