package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/sshward/sshward/ca/api"
)

// Terminating live sessions (issue 13 §1). An auditor's order reaches the
// agent on its revocation stream (api.EventTerminate). The agent acts only
// on an order that verifies with a host CA key it trusts now (the keys the
// CA named on the stream, a previous one until it retires: hostcatrust.go;
// the key that signed its own host certificate before the CA named any),
// that names this host and that has not expired
// (api.TerminateOrder.VerifyAny): the TLS channel is not the only guard, so a
// forged or replayed order, from a CA impostor or a recorded stream, ends
// nothing. The connection carrying the session ends with the auditor's
// name and reason on the user's terminal, in the recording (marker and end
// reason) and in the agent's audit; the CA's audit chain holds the order.

// AuditSessionTerminated is the agent audit action of an order carried out.
const AuditSessionTerminated = "session.terminated"

// oversight is the agent's state for terminate orders and flag rules.
type oversight struct {
	mu   sync.Mutex           // guards the fields below
	seen map[string]time.Time // nonces of orders carried out, until they expire
	// rules are the tier's flag rules from the CA (nil: not heard yet, the
	// defaults apply); see flags.go.
	rules *flagRules
	// reports queue flag reports for the CA (flagreport.go).
	reports chan api.FlagReport
}

// applyTerminate carries out a verified order; it ignores anything else.
func (s *Server) applyTerminate(ctx context.Context, o *api.TerminateOrder) {
	id := s.identity()
	if o == nil || id == nil || id.cert == nil {
		return
	}
	now := s.cfg.Now()
	if err := o.VerifyAny(s.orderKeys(id, now), s.cfg.HostName, now); err != nil {
		if !errors.Is(err, api.ErrOrderHost) {
			// What the order says is not logged: it is unverified.
			s.log.WarnContext(ctx, "agent: terminate order ignored", "reason", err.Error())
		}
		return
	}
	s.over.mu.Lock()
	if s.over.seen == nil {
		s.over.seen = map[string]time.Time{}
	}
	for n, exp := range s.over.seen {
		if !now.Before(exp) {
			delete(s.over.seen, n)
		}
	}
	_, dup := s.over.seen[o.Nonce]
	s.over.seen[o.Nonce] = o.Expires
	s.over.mu.Unlock()
	if dup {
		return // sent again after a reconnect
	}
	notice := cleanNotice("terminated by " + o.By + ": " + o.Reason)
	for _, c := range s.liveConns() {
		if !strings.HasPrefix(o.SessionID, c.id+"-") {
			continue
		}
		c.log.WarnContext(ctx, "agent: session terminated by an auditor", "by", o.By, "reason", cleanNotice(o.Reason))
		g := c.g
		s.audit(ctx, AuditEvent{Action: AuditSessionTerminated, SessionID: o.SessionID, Serial: g.cert.Serial, KeyID: g.cert.KeyId,
			Principal: g.login, Tier: g.tier, ClientAddr: g.clientAddr, Reason: notice, Detail: "by " + o.By})
		c.cancel(&endNotice{cause: ErrTerminated, notice: notice})
	}
}
