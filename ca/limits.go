package ca

import "github.com/sshward/sshward/ca/api"

// hostUserCALimits lists, for each user-CA key a host of tier trusts, the
// max_ttl of the tier it signs for: agents refuse certificates that claim
// more (issue 8 §4), so a leaked tier key cannot mint long-lived or
// never-expiring certificates that hosts accept.
func (a *Authority) hostUserCALimits(tier string) []api.UserCALimit {
	var out []api.UserCALimit
	for _, t := range a.cfg.Policy.HostTrust(tier) {
		s := a.userCA(t)
		pt, ok := a.cfg.Policy.Tier(t)
		if s == nil || !ok {
			continue
		}
		out = append(out, api.UserCALimit{Tier: t, UserCA: authorizedKey(s.PublicKey()), MaxTTL: api.Duration(pt.MaxTTL)})
		if p, ok := a.previousUserCA(t, a.cfg.Now()); ok {
			out = append(out, api.UserCALimit{Tier: t, UserCA: authorizedKey(p.Key), MaxTTL: api.Duration(pt.MaxTTL), NotAfter: p.RetireAt.UTC()})
		}
	}
	return out
}
