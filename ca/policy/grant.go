package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/api"
)

// Request asks what a certificate for Identity in Tier may carry.
type Request struct {
	Identity Identity
	Tier     string
	// Principals, when non-empty, narrows the grant; it must be a subset of
	// what the identity may have in the tier.
	Principals []string
	// TTL, when zero, is the tier's ttl.
	TTL time.Duration
	// ClientAddr is the IP (no port) the request came from; used when the
	// tier binds certificates to it (source_address: client).
	ClientAddr string
	// RequestID is the access request behind this issuance, if any; it goes
	// into the api.ExtRequestID extension.
	RequestID string
	// Approved is set by the CA when RequestID names an access request that
	// has gathered the tier's approvals and has not been used yet. Policy
	// does not count approvals itself: the request store does.
	Approved bool
	// OnCall, set by the CA, says the identity is on call now (oncall.go).
	OnCall *OnCall
	// Scope (normalized) limits the certificate to hosts and host labels;
	// it goes into the api.CritScope critical option (approvalrules.go
	// rules may look at it).
	Scope api.Scope
	// Now is when the request is made, for approval rule windows; the CA
	// sets it from its clock (zero: no window matches).
	Now time.Time
}

// Check validates the shape of the request, not the policy. Errors wrap
// ErrBadRequest; they are caller bugs, not refusals.
func (r *Request) Check() error {
	switch {
	case r.Identity.User == "":
		return fmt.Errorf("%w: identity has no user", ErrBadRequest)
	case r.TTL < 0:
		return fmt.Errorf("%w: ttl %s is negative", ErrBadRequest, FormatDuration(r.TTL))
	case r.Approved && r.RequestID == "":
		return fmt.Errorf("%w: an approved request needs its request id", ErrBadRequest)
	case r.RequestID != "" && !validRequestID(r.RequestID):
		return fmt.Errorf("%w: request id %q must be 1-64 letters, digits, '.', '_' or '-'", ErrBadRequest, r.RequestID)
	}
	if n, err := r.Scope.Normalize(); err != nil || !n.Equal(r.Scope) {
		return fmt.Errorf("%w: scope is not valid and normalized: %v", ErrBadRequest, err)
	}
	return nil
}

// Grant is what policy allows for one certificate. The CA copies it into the
// certificate as is; it adds serial, key id and validity.
type Grant struct {
	Tier       string
	Principals []string      // sorted, deduplicated, never empty
	TTL        time.Duration // within [MinTTL, tier max_ttl]
	// Extensions holds the tier's permit-* (value "") and sshward's own
	// …@sshward extensions (see api.ExtTier and friends).
	Extensions map[string]string
	// CriticalOptions holds force-command and source-address when the tier
	// sets them (PROTOCOL.certkeys "Critical options").
	CriticalOptions map[string]string
	SingleUse       bool
	RecordInput     bool
	RequestID       string
	Scope           api.Scope // as in CriticalOptions[api.CritScope]
	// OnCall is set when the grant rests on the identity being on call: TTL
	// ends with the shift at the latest and the CA revokes it then.
	OnCall *OnCall
}

// Grant decides what a certificate for r may carry, or refuses. It checks, in
// order: the request's shape, that the tier exists, that the identity is in
// one of the tier's groups, MFA, approvals, principals, TTL and the client
// address. A refusal's Error() is one sentence for the user; branch on it
// with errors.Is (ErrUnknownTier, ErrNotEntitled, ErrMFARequired,
// ErrApprovalRequired, ErrNoPrincipals, ErrClientAddr, ErrBadRequest) and
// errors.As (*PrincipalError, *TTLError), or map it with ErrorCode.
func (p *Policy) Grant(r Request) (*Grant, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	t, ok := p.Tier(r.Tier)
	if !ok {
		return nil, refuse(ErrUnknownTier, "unknown tier %q: ask for one of %s", r.Tier, strings.Join(p.TierNames(), ", "))
	}
	id := r.Identity
	if !t.Entitles(id) {
		return nil, refuse(ErrNotEntitled, "user %s is in no group that grants tier %s (needs one of: %s)",
			display(id.User), t.Name, strings.Join(t.Groups(), ", "))
	}
	if t.MFA && !id.MFA {
		return nil, refuse(ErrMFARequired, "tier %s requires multi-factor login: log in again with your TOTP code or an MFA-backed OIDC login", t.Name)
	}
	if err := t.requireOnCall(r); err != nil {
		return nil, err
	}
	if err := t.requireApprovals(r); err != nil {
		return nil, err
	}

	allowed := t.PrincipalsFor(id)
	if len(allowed) == 0 {
		return nil, refuse(ErrNoPrincipals, "tier %s maps user %s to no valid login name: ask an administrator to list a login for your group in the policy ({{user}} only works for unix-style user names)",
			t.Name, display(id.User))
	}
	principals := allowed
	if len(r.Principals) > 0 {
		for _, want := range r.Principals {
			if !slices.Contains(allowed, want) {
				return nil, &PrincipalError{User: id.User, Tier: t.Name, Principal: want, Allowed: allowed}
			}
		}
		principals = sortedSet(append([]string(nil), r.Principals...))
	}

	ttl := r.TTL
	if ttl == 0 {
		ttl = t.TTL
	}
	if ttl < MinTTL || ttl > t.MaxTTL {
		return nil, &TTLError{Tier: t.Name, Asked: ttl, Min: MinTTL, Max: t.MaxTTL}
	}
	ttl, err := t.capToShift(ttl, r)
	if err != nil {
		return nil, err
	}
	g, err := t.grant(r, principals, ttl)
	if err != nil {
		return nil, err
	}
	t.onCallGrant(g, r)
	return g, nil
}

// grant builds what the tier puts in a certificate for r once who may have
// which principals for how long is decided (Grant, GrantWorkload).
func (t *Tier) grant(r Request, principals []string, ttl time.Duration) (*Grant, error) {
	crit := map[string]string{}
	if t.ForceCommand != "" {
		crit["force-command"] = t.ForceCommand
	}
	switch t.SourceAddress {
	case "":
	case SourceAddressClient:
		cidr, ok := hostCIDR(r.ClientAddr)
		if !ok {
			return nil, refuse(ErrClientAddr, "tier %s binds certificates to your network address, but the CA could not tell what it is: try again, and tell an administrator if it persists", t.Name)
		}
		crit["source-address"] = cidr
	default:
		crit["source-address"] = t.SourceAddress
	}

	ext := map[string]string{
		api.ExtTier:        t.Name,
		api.ExtRecordInput: yesNo(t.RecordInput),
		api.ExtOnRecFail:   t.OnRecordingFailure,
	}
	for _, e := range t.Extensions {
		ext[e] = ""
	}
	if r.RequestID != "" {
		ext[api.ExtRequestID] = r.RequestID
	}
	if t.SingleUse {
		ext[api.ExtSingleUse] = ""
	}
	if t.EndSessionOnExpiry {
		ext[api.ExtEndOnExpiry] = ""
	}
	t.bulkOutputGrant(ext)
	if !r.Scope.IsZero() {
		crit[api.CritScope] = r.Scope.Encode()
	}

	g := &Grant{
		Tier:            t.Name,
		Principals:      principals,
		TTL:             ttl,
		Extensions:      ext,
		CriticalOptions: crit,
		SingleUse:       t.SingleUse,
		RecordInput:     t.RecordInput,
		RequestID:       r.RequestID,
		Scope:           r.Scope,
	}
	return g, nil
}

// hostCIDR turns a client IP into a one-address CIDR. An IPv4 address seen
// through an IPv6 socket (::ffff:a.b.c.d) becomes a.b.c.d/32, which is how
// sshd will see the same client.
func hostCIDR(addr string) (string, bool) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return "", false
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()).String(), true
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
