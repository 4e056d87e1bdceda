package agent

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// Host CA rotation on the agent (issue 14). The CA signs its orders
// (terminate, api.TerminateOrder) with its current host-CA key; during a
// host-CA rotation's overlap that is the new key while this host's
// certificate may still be signed by the old one. The revocation stream
// names the host-CA keys trusted now (api.HostTrust.HostCA, in the hello
// and whenever a key rotates or retires), the previous one with the time
// it retires, and the agent verifies orders against each key until then:
// an order signed by a retired key (a stolen copy of it, or a recorded
// one) is refused at retirement even while the CA cannot be reached, and
// so is one signed by any key that is not the CA's host key (a user CA, a
// host's own key). When the first key, the one the CA signs with, is not
// the one that signed this host's certificate, the agent renews its
// certificate within HostCARenewSpread (at random, so that a fleet does
// not renew all at once), well before the old key retires: clients whose
// known_hosts no longer lists the old key still accept the host.

// hostCAKey is a host-CA key the CA named and when it retires (zero: the
// signing key).
type hostCAKey struct {
	key      ssh.PublicKey
	notAfter time.Time
}

// hostCATrust is the host-CA keys the CA named last, the signing key first.
type hostCATrust struct {
	keys []hostCAKey
	// renewBy is when the agent renews onto keys[0] if its certificate is
	// of another key; zero when it already is.
	renewBy time.Time
}

// hostCARenewal is the agent's host-CA state: set from the revocation
// stream, read by terminate orders and renewLoop.
type hostCARenewal struct {
	mu    sync.Mutex   // guards trust
	trust *hostCATrust // nil until the CA named its keys (older CAs never do)
	// kick wakes renewLoop when a renewal onto a new key is scheduled.
	kick chan struct{}
}

// parseHostCAKeys parses the CA's list; nil when it sent none.
func parseHostCAKeys(list []api.HostCAKey) ([]hostCAKey, error) {
	var out []hostCAKey
	for _, k := range list {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.Key))
		if err != nil {
			return nil, err
		}
		out = append(out, hostCAKey{key: pub, notAfter: k.NotAfter})
	}
	return out, nil
}

// applyHostCATrust takes the host-CA keys of t (an older CA sends none:
// nothing changes) and schedules a renewal when the CA signs with a key
// other than the one that signed this host's certificate.
func (s *Server) applyHostCATrust(ctx context.Context, t *api.HostTrust) {
	if t == nil || len(t.HostCA) == 0 {
		return
	}
	keys, err := parseHostCAKeys(t.HostCA)
	if err != nil {
		s.log.ErrorContext(ctx, "agent: the CA sent host CA keys that do not parse; keeping the current ones", "err", err)
		return
	}
	id := s.identity()
	now := s.cfg.Now()
	h := &s.hostCA
	h.mu.Lock()
	prev := h.trust
	next := &hostCATrust{keys: keys}
	if id != nil && !sameKey(keys[0].key, id.cert.SignatureKey) {
		// Keep a renewal time already chosen for the same key.
		if prev != nil && !prev.renewBy.IsZero() && sameKey(prev.keys[0].key, keys[0].key) {
			next.renewBy = prev.renewBy
		} else {
			next.renewBy = now.Add(s.renewDelay(keys, id.cert.SignatureKey, now))
		}
	}
	h.trust = next
	h.mu.Unlock()
	if prev == nil || !sameHostCAKeys(prev.keys, keys) {
		s.log.InfoContext(ctx, "agent: trusted host CA keys updated", "keys", describeHostCAKeys(keys))
	}
	if !next.renewBy.IsZero() && (prev == nil || !next.renewBy.Equal(prev.renewBy)) {
		s.log.InfoContext(ctx, "agent: the host CA signs with a new key; renewing the host certificate onto it",
			"host_ca", ssh.FingerprintSHA256(keys[0].key), "certificate_ca", ssh.FingerprintSHA256(id.cert.SignatureKey),
			"renew_at", next.renewBy.UTC().Format(time.RFC3339))
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

// renewDelay picks when to renew onto a new host-CA key: at random within
// HostCARenewSpread, and within half of what is left of the overlap of the
// key that signed the current certificate.
func (s *Server) renewDelay(keys []hostCAKey, certCA ssh.PublicKey, now time.Time) time.Duration {
	spread := s.cfg.HostCARenewSpread
	for _, k := range keys[1:] {
		if sameKey(k.key, certCA) && !k.notAfter.IsZero() {
			spread = min(spread, k.notAfter.Sub(now)/2)
		}
	}
	if spread <= 0 {
		return 0
	}
	return s.cfg.renewJitter(spread)
}

// hostCARenewDue is when renewLoop must renew id onto the host CA's new
// key; false when id's certificate is of the key the CA signs with (or the
// CA named none).
func (s *Server) hostCARenewDue(id *hostIdentity) (time.Time, bool) {
	h := &s.hostCA
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.trust
	if t == nil || t.renewBy.IsZero() || sameKey(t.keys[0].key, id.cert.SignatureKey) {
		return time.Time{}, false
	}
	return t.renewBy, true
}

// orderKeys are the host-CA keys an order may be signed with at now: those
// the CA named and that have not retired; before the CA named any (a CA
// from before host-CA rotation), the key that signed id's certificate.
func (s *Server) orderKeys(id *hostIdentity, now time.Time) []ssh.PublicKey {
	h := &s.hostCA
	h.mu.Lock()
	t := h.trust
	h.mu.Unlock()
	if t == nil {
		return []ssh.PublicKey{id.cert.SignatureKey}
	}
	var out []ssh.PublicKey
	for _, k := range t.keys {
		if k.notAfter.IsZero() || now.Before(k.notAfter) {
			out = append(out, k.key)
		}
	}
	return out
}

func sameKey(a, b ssh.PublicKey) bool {
	return a != nil && b != nil && bytes.Equal(a.Marshal(), b.Marshal())
}

func sameHostCAKeys(a, b []hostCAKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameKey(a[i].key, b[i].key) || !a[i].notAfter.Equal(b[i].notAfter) {
			return false
		}
	}
	return true
}

// describeHostCAKeys is a log value: "SHA256:…,SHA256:…(until …)".
func describeHostCAKeys(keys []hostCAKey) string {
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		p := ssh.FingerprintSHA256(k.key)
		if !k.notAfter.IsZero() {
			p += "(until " + k.notAfter.UTC().Format(time.RFC3339) + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ",")
}
