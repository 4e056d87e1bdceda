package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// Fleet-wide single use (DESIGN.md "Trust invariants"): before a session
// with a single-use certificate starts, the agent claims the serial at the
// CA, synchronously, with its host certificate. The CA's store decides:
// one claim in the whole fleet wins. Without an answer the certificate is
// refused (fail closed). The local used-serial file (singleuse.go) is a
// second line: checked first, written after the CA said yes.

// singleUseClaimer is the part of the CA client that claims a single-use
// certificate. A CA without it cannot confirm single use: such
// certificates are then refused.
type singleUseClaimer interface {
	ClaimSingleUse(ctx context.Context, serial uint64, claim api.SingleUseClaim, cert *ssh.Certificate, signer ssh.Signer) (*api.SingleUseClaimed, error)
}

// ClaimTimeout bounds the claim of a single-use certificate at the CA. It
// runs inside the SSH authentication, which has HandshakeTimeout.
const ClaimTimeout = 5 * time.Second

// Refusal reasons of single use and target hosts (logged and audited).
const (
	reasonSingleUseCA      = "the CA could not be reached to confirm single use"
	reasonSingleUseRefused = "the CA refused the single-use claim"
	reasonHostNotListed    = "this host is not among the certificate's target hosts (hosts@sshward)"
)

// What the user is shown for those refusals: one sentence, with the fix.
const (
	usedBanner        = "sshward: access denied. This single-use certificate was already used: ask for a new access request with `sshward request`.\n"
	unreachableBanner = "sshward: access denied. The CA could not be reached to confirm that this single-use certificate is unused, so it is refused (fail closed): try again in a moment, or ask an administrator.\n"
)

// errClaimUnreachable wraps every claim failure that is not the CA's
// answer: network, timeout, a CA without the claim API.
var errClaimUnreachable = errors.New("agent: CA unreachable for the single-use claim")

// claimSingleUse asks the CA to record the one use of g's certificate for
// connection connID. It returns nil when this connection may go on, an
// *api.Error when the CA said no, or an error wrapping errClaimUnreachable.
func (s *Server) claimSingleUse(g *grant, connID string) error {
	cl, ok := s.cfg.CA.(singleUseClaimer)
	if !ok {
		return fmt.Errorf("%w: the CA client cannot claim", errClaimUnreachable)
	}
	hid := s.identity()
	ctx, cancel := context.WithTimeout(context.Background(), ClaimTimeout)
	defer cancel()
	_, err := cl.ClaimSingleUse(ctx, g.cert.Serial, api.SingleUseClaim{RequestID: g.requestID, SessionID: connID, ClientAddr: g.clientAddr}, hid.cert, hid.key)
	var ae *api.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae) && ae.Status/100 == 4 && ae.Code != api.CodeUnauthenticated:
		// The CA answered: already used, not for this host, expired …
		return ae
	}
	return fmt.Errorf("%w: %w", errClaimUnreachable, err)
}

// spendSingleUse runs in admitVerified for a single-use certificate: the
// CA claim, then the local record. It returns a refusal error for the SSH
// library, or nil when the session may start.
func (s *Server) spendSingleUse(ca *connAuth, c ssh.ConnMetadata, g *grant) error {
	if s.single.seenBefore(g.cert.Serial) {
		return s.refuse(ca, c, g.cert, reasonSingleUse, "local record")
	}
	if err := s.claimSingleUse(g, ca.id); err != nil {
		var ae *api.Error
		switch {
		case errors.As(err, &ae) && ae.Code == api.CodeAlreadyUsed:
			return s.refuse(ca, c, g.cert, reasonSingleUse, "refused by the CA")
		case errors.As(err, &ae):
			return s.refuseWith(ca, c, g.cert, reasonSingleUseRefused, ae.Message,
				"sshward: access denied. The CA refused this single-use certificate: "+oneLine(ae.Message)+"\n")
		}
		s.log.Error("agent: cannot claim a single-use certificate at the CA; refusing (fail closed)", "serial", g.cert.Serial, "err", err)
		return s.refuseWith(ca, c, g.cert, reasonSingleUseCA, err.Error(), unreachableBanner)
	}
	if err := s.single.use(g.cert.Serial, int64(g.cert.ValidBefore)); err != nil {
		reason := reasonSingleUse
		if !errors.Is(err, errSingleUseSeen) {
			reason = reasonSingleUseStore
			s.log.Error("agent: cannot record a single-use serial", "err", err, "serial", g.cert.Serial)
		}
		return s.refuse(ca, c, g.cert, reason, "")
	}
	return nil
}

// hostNotListed reports the target hosts of cert when this host (any of
// its host certificate's principals) is not among them; nil when the
// certificate names none or names this host.
func (s *Server) hostNotListed(cert *ssh.Certificate) []string {
	v, ok := cert.Extensions[api.ExtHosts]
	if !ok {
		return nil
	}
	targets := api.ParseExtHosts(v)
	for _, p := range s.identity().cert.ValidPrincipals {
		if slices.Contains(targets, strings.ToLower(p)) {
			return nil
		}
	}
	if len(targets) == 0 {
		return []string{"(none)"} // an empty list names no host: refuse
	}
	return targets
}

// thisHost names this host in a refusal: the configured host name when the
// host certificate carries it, else the certificate's first principal.
func (s *Server) thisHost() string {
	ps := s.identity().cert.ValidPrincipals
	if slices.Contains(ps, s.cfg.HostName) || len(ps) == 0 {
		return s.cfg.HostName
	}
	return ps[0]
}

// hostBanner is what the user sees when the certificate is for other hosts.
func (s *Server) hostBanner(cert *ssh.Certificate) string {
	return fmt.Sprintf("sshward: access denied. This certificate is for %s only, not %s: ask for an access request that names this host (sshward request --host %s).\n",
		oneLine(strings.Join(api.ParseExtHosts(cert.Extensions[api.ExtHosts]), ", ")), s.thisHost(), s.thisHost())
}

// oneLine keeps text from the CA or a certificate on one printable line.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 300 {
		s = strings.ToValidUTF8(s[:300], "")
	}
	return strings.TrimSpace(s)
}
