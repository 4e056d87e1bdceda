package policy

import (
	"slices"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/api"
)

// Limits and defaults of the policy file (see doc.go for the schema).
const (
	// MinTTL is the shortest certificate, policy duration or request
	// lifetime allowed: certificates are backdated up to a minute for clock
	// skew, so anything shorter is a unit mistake.
	MinTTL = time.Minute
	// MaxDuration caps every duration in the policy so that validity
	// arithmetic downstream can never overflow.
	MaxDuration = 8760 * time.Hour

	DefaultSessionTTL  = 12 * time.Hour
	DefaultHostCertTTL = 24 * time.Hour
	DefaultRequestTTL  = 30 * time.Minute

	// DefaultRevocationMaxStale is a tier's revocation_max_stale when the
	// policy does not set one: past it, a host that cannot refresh its
	// revocation list refuses new sessions of the tier.
	DefaultRevocationMaxStale = 5 * time.Minute

	// MaxPolicyBytes bounds the policy file Parse accepts.
	MaxPolicyBytes = 1 << 20

	// UserPlaceholder in a principal template stands for Identity.User.
	UserPlaceholder = "{{user}}"

	// Values of Tier.OnRecordingFailure.
	RecordingFailOpen   = "open"
	RecordingFailClosed = "closed"

	// SourceAddressClient in Tier.SourceAddress binds each certificate to
	// the address the request came from.
	SourceAddressClient = "client"
)

// KnownExtensions returns the OpenSSH permit-* extensions a tier may grant
// (PROTOCOL.certkeys "Extensions"). The agent enforces each one itself.
func KnownExtensions() []string {
	return []string{
		"permit-X11-forwarding",
		"permit-agent-forwarding",
		"permit-port-forwarding",
		"permit-pty",
		"permit-user-rc",
	}
}

// Identity is who asks, as established by the identity layer (local
// password+TOTP or OIDC). Groups match the policy's group names exactly.
type Identity struct {
	User   string
	Groups []string
	// MFA is true when the login that produced this identity used a second
	// factor (TOTP, or an OIDC amr/acr that says so).
	MFA bool
}

// Policy is a parsed, valid policy file. Treat it as read-only once built:
// Grant and TiersFor may run concurrently on it.
type Policy struct {
	SessionTTL  time.Duration // CA login session lifetime
	HostCertTTL time.Duration // host certificate lifetime
	Tiers       []*Tier       // in file order
	// TerminateGroups (terminate_groups) may end live sessions; nil means
	// DefaultTerminateGroups (oversight.go).
	TerminateGroups []string
	// WorkloadIssuers (workload_issuers) are the CI token issuers trusted
	// to exchange tokens for certificates (workload.go); none: no workload
	// gets a certificate.
	WorkloadIssuers []WorkloadIssuer
}

// Tier is one entry under tiers:. Field comments give the YAML key.
type Tier struct {
	Name               string              // the key under tiers:
	Hosts              []string            // hosts: ssh_config patterns the tier covers
	TTL                time.Duration       // ttl: default certificate lifetime
	MaxTTL             time.Duration       // max_ttl: hard maximum a client may ask for
	MFA                bool                // mfa: the login must have used a second factor
	Approvals          int                 // approvals: distinct approvers an access request needs
	Approvers          []string            // approvers: groups whose members may approve
	RecordInput        bool                // record_input: record keystrokes, not just output
	SingleUse          bool                // single_use: a certificate starts one session only
	Extensions         []string            // extensions: permit-* granted
	Principals         map[string][]string // principals: group -> principal templates
	SourceAddress      string              // source_address: "", "client", or comma-separated CIDRs
	ForceCommand       string              // force_command: OpenSSH force-command
	OnRecordingFailure string              // on_recording_failure: "open" or "closed"
	EndSessionOnExpiry bool                // end_session_on_expiry: cut sessions at cert expiry
	RequestTTL         time.Duration       // request_ttl: how long a pending access request lives
	TrustedOn          []string            // trusted_on: other tiers whose hosts also accept this tier's certificates
	// RevocationMaxStale (revocation_max_stale) bounds how old a host's
	// revocation list may grow, while the host cannot reach the CA, before
	// it refuses new sessions of this tier. 0 ("off") means no bound.
	// Default DefaultRevocationMaxStale.
	RevocationMaxStale time.Duration
	// RequiresOnCall (requires_oncall) and OnCallApprovals
	// (oncall_approvals, nil: unset) tie the tier to the on-call schedule
	// (oncall.go).
	RequiresOnCall  bool
	OnCallApprovals *int
	// BulkKeepMiB (bulk_output: {keep_mib: N}) caps the binary output a
	// recording keeps at its first N MiB; 0 ({keep: all}) keeps all
	// (bulkoutput.go).
	BulkKeepMiB int
	// Flags (flags) are the suspicious-activity rules the tier's agents
	// evaluate as sessions run; nil means api.DefaultFlagRules
	// (oversight.go), an empty list none.
	Flags []api.FlagRule
	// ApprovalRules (approval_rules): risk-tiered approvals, first match
	// wins (approvalrules.go).
	ApprovalRules []ApprovalRule
}

// Tier returns the tier called name.
func (p *Policy) Tier(name string) (*Tier, bool) {
	if p == nil {
		return nil, false
	}
	for _, t := range p.Tiers {
		if t != nil && t.Name == name {
			return t, true
		}
	}
	return nil, false
}

// TierNames returns the names of all tiers in file order.
func (p *Policy) TierNames() []string {
	if p == nil {
		return nil
	}
	names := make([]string, 0, len(p.Tiers))
	for _, t := range p.Tiers {
		if t != nil {
			names = append(names, t.Name)
		}
	}
	return names
}

// TiersFor returns, in file order, the tiers in which id would receive at
// least one principal. It ignores MFA and approvals: those are gates on
// issuance, not on entitlement, and a client shows them separately.
func (p *Policy) TiersFor(id Identity) []string {
	var out []string
	if p == nil {
		return out
	}
	for _, t := range p.Tiers {
		if t != nil && len(t.PrincipalsFor(id)) > 0 {
			out = append(out, t.Name)
		}
	}
	return out
}

// Entitles reports whether id is in at least one group that the tier maps
// to principals.
func (t *Tier) Entitles(id Identity) bool {
	for _, g := range id.Groups {
		if _, ok := t.Principals[g]; ok {
			return true
		}
	}
	return false
}

// PrincipalsFor expands the tier's templates for every group id is in and
// returns the result sorted and deduplicated. A template whose expansion is
// not a valid login name (see IsValidPrincipal) is dropped: an OIDC user
// "a@b.c" gets nothing from "{{user}}" rather than a bogus login.
func (t *Tier) PrincipalsFor(id Identity) []string {
	var out []string
	for _, g := range id.Groups {
		for _, tmpl := range t.Principals[g] {
			p := strings.ReplaceAll(tmpl, UserPlaceholder, id.User)
			if IsValidPrincipal(p) {
				out = append(out, p)
			}
		}
	}
	return sortedSet(out)
}

// Groups returns the groups the tier maps to principals, sorted.
func (t *Tier) Groups() []string {
	gs := make([]string, 0, len(t.Principals))
	for g := range t.Principals {
		gs = append(gs, g)
	}
	slices.Sort(gs)
	return gs
}

// IsValidPrincipal reports whether s can be a unix login name and so a
// certificate principal: a letter or underscore, then up to 31 letters,
// digits, '_', '.' or '-'. Upper case is allowed (some directories use it).
func IsValidPrincipal(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// FormatDuration writes d the way a policy file would: "15m", "2h",
// "1h30m", "90s" → "1m30s".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func sortedSet(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// HostTrust lists the tiers whose user certificates hosts of tier accept:
// the tier itself, then every tier that names it in trusted_on (break-glass
// on production). It decides the TrustedUserCAKeys and KRL of a host tier.
func (p *Policy) HostTrust(tier string) []string {
	out := []string{tier}
	for _, t := range p.Tiers {
		if t.Name != tier && slices.Contains(t.TrustedOn, tier) {
			out = append(out, t.Name)
		}
	}
	return out
}
