package agent

import (
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// reasonRevocationStale refuses a login because the host's revocation list
// is older than the tier allows (revocation_max_stale): a host cut off
// from the CA must not admit, for ever, certificates revoked meanwhile.
const reasonRevocationStale = "revocation list too old"

// DefaultRevocationMaxStale is the bound the agent applies for a tier
// whose revocation_max_stale it never learned from the CA (a CA from
// before issue 8): the default policy's, 5 minutes, and none for staging.
func DefaultRevocationMaxStale(tier string) time.Duration {
	if tier == api.TierStaging {
		return 0
	}
	return 5 * time.Minute
}

// revocationMaxStale is the bound for certificates of tier: what the CA
// said with the list (cached with it), else DefaultRevocationMaxStale.
// Zero means no bound.
func revocationMaxStale(r *revocations, tier string) time.Duration {
	if r != nil {
		if d, ok := r.list.MaxStale[tier]; ok {
			return max(time.Duration(d), 0)
		}
	}
	return DefaultRevocationMaxStale(tier)
}

// checkRevocationFresh refuses a certificate whose tier bounds the age of
// the revocation list when the list is older than that: the CA has not
// been heard from (no fetch, no stream event, no heartbeat) for longer.
// The tier is the one of the CA key that signed the certificate.
func (s *Server) checkRevocationFresh(cert *ssh.Certificate) (reason, detail string) {
	tier := s.identity().limitFor(cert.SignatureKey).tier
	revs := s.revs.Load()
	bound := revocationMaxStale(revs, tier)
	if bound <= 0 {
		return "", ""
	}
	if revs == nil || revs.heardAt.IsZero() {
		return reasonRevocationStale, fmt.Sprintf("tier=%s max_stale=%s age=never fetched", tier, bound)
	}
	if age := s.cfg.Now().Sub(revs.heardAt); age > bound {
		return reasonRevocationStale, fmt.Sprintf("tier=%s max_stale=%s age=%s heard_at=%s", tier, bound,
			age.Round(time.Second), revs.heardAt.UTC().Format(time.RFC3339))
	}
	return "", ""
}

// refusalBanner is what a refused user reads: deniedBanner, but for a
// stale revocation list the cause, so that nobody hunts for a fault in
// their certificate while the host is cut off from the CA.
func (s *Server) refusalBanner(reason string) string {
	if reason != reasonRevocationStale {
		return deniedBanner
	}
	age := "of unknown age"
	if r := s.revs.Load(); r != nil && !r.heardAt.IsZero() {
		age = s.cfg.Now().Sub(r.heardAt).Round(time.Second).String() + " old"
	}
	return "sshward: access denied: this host's revocation list is " + age +
		": the CA could not be reached. Try again when the host reaches the CA again, or ask an administrator.\n"
}
