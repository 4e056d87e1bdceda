package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Check validates a policy built in Go the way Parse validates a file, and
// returns the first problem as a *ParseError (Line 0). Parse calls it too, so
// every *Policy that Parse returns passes Check. Check does not fill defaults:
// a Go-built policy must set every duration.
func (p *Policy) Check() error {
	if is := p.check(); is != nil {
		return is.parseError(nil)
	}
	return nil
}

// issue is a validation problem before it has a line number. Parse looks the
// line up by (tier, at, index) in what the decoder recorded.
type issue struct {
	tier   string
	field  string // ParseError.Field
	at     string // line lookup key when it differs from field, e.g. "principals.sre"
	index  int    // list element, -1 for the key itself
	reason string
}

func fieldIssue(tier, field, format string, args ...any) *issue {
	return &issue{tier: tier, field: field, index: -1, reason: fmt.Sprintf(format, args...)}
}

func (is *issue) parseError(lines map[lineKey]int) *ParseError {
	at := is.at
	if at == "" {
		at = is.field
	}
	line := 0
	for _, k := range []lineKey{
		{is.tier, at, is.index},
		{is.tier, at, -1},
		{is.tier, is.field, -1},
		{is.tier, "", -1},
	} {
		if l, ok := lines[k]; ok {
			line = l
			break
		}
	}
	return &ParseError{Line: line, Tier: is.tier, Field: is.field, Reason: is.reason}
}

func (p *Policy) check() *issue {
	if p == nil {
		return fieldIssue("", "tiers", "policy is missing")
	}
	if is := checkDuration("", "session_ttl", p.SessionTTL); is != nil {
		return is
	}
	if is := checkDuration("", "host_cert_ttl", p.HostCertTTL); is != nil {
		return is
	}
	if len(p.Tiers) == 0 {
		return fieldIssue("", "tiers", "tiers is empty: define at least one tier (sshward-ca init writes an example policy)")
	}
	seen := map[string]bool{}
	for i, t := range p.Tiers {
		if t == nil {
			return &issue{field: "tiers", index: i, reason: fmt.Sprintf("tiers entry %d is nil", i+1)}
		}
		if seen[t.Name] {
			return fieldIssue(t.Name, "name", "tier %q is defined twice: merge the two definitions", t.Name)
		}
		seen[t.Name] = true
		if is := t.check(); is != nil {
			return is
		}
	}
	if is := p.checkWorkload(); is != nil {
		return is
	}
	for _, t := range p.Tiers {
		for _, on := range t.TrustedOn {
			if on == t.Name {
				return fieldIssue(t.Name, "trusted_on", "trusted_on names the tier itself: list other tiers whose hosts accept %s certificates", t.Name)
			}
			if !seen[on] {
				return fieldIssue(t.Name, "trusted_on", "trusted_on names unknown tier %q", on)
			}
		}
	}
	return nil
}

func (t *Tier) check() *issue {
	n := t.Name
	if !validTierName(n) {
		return fieldIssue(n, "name", "tier name %q must be 1-32 lower-case letters, digits or '-', starting with a letter or digit", n)
	}
	if is := checkList(n, "hosts", t.Hosts, checkHostPattern); is != nil {
		return is
	}
	if is := checkDuration(n, "ttl", t.TTL); is != nil {
		return is
	}
	if is := checkDuration(n, "max_ttl", t.MaxTTL); is != nil {
		return is
	}
	if t.MaxTTL < t.TTL {
		return fieldIssue(n, "max_ttl", "max_ttl %s is shorter than ttl %s", FormatDuration(t.MaxTTL), FormatDuration(t.TTL))
	}
	if t.Approvals < 0 {
		return fieldIssue(n, "approvals", "approvals is %d: it must be 0 or more", t.Approvals)
	}
	if t.Approvals > 0 && len(t.Approvers) == 0 {
		is := fieldIssue(n, "approvers", "approvers is empty but approvals is %d: name the groups whose members may approve, e.g. approvers: [incident-commanders]", t.Approvals)
		is.at = "approvals"
		return is
	}
	if is := checkList(n, "approvers", t.Approvers, checkGroup); is != nil {
		return is
	}
	if is := checkList(n, "extensions", t.Extensions, checkExtension); is != nil {
		return is
	}
	if is := checkPrincipals(n, t.Principals); is != nil {
		return is
	}
	if is := checkSourceAddress(n, t.SourceAddress); is != nil {
		return is
	}
	if t.RevocationMaxStale != 0 {
		if is := checkDuration(n, "revocation_max_stale", t.RevocationMaxStale); is != nil {
			return is
		}
	}
	if is := t.checkOnCall(); is != nil {
		return is
	}
	if is := t.checkApprovalRules(); is != nil {
		return is
	}
	if t.OnRecordingFailure != RecordingFailOpen && t.OnRecordingFailure != RecordingFailClosed {
		return fieldIssue(n, "on_recording_failure", "on_recording_failure %q must be open or closed", t.OnRecordingFailure)
	}
	return checkDuration(n, "request_ttl", t.RequestTTL)
}

func checkDuration(tier, field string, d time.Duration) *issue {
	switch {
	case d < MinTTL:
		return fieldIssue(tier, field, "%s %s is too short: it must be at least %s", field, FormatDuration(d), FormatDuration(MinTTL))
	case d > MaxDuration:
		return fieldIssue(tier, field, "%s %s is longer than the %s limit", field, FormatDuration(d), FormatDuration(MaxDuration))
	}
	return nil
}

// checkList checks each element with one (which returns a reason or "") and
// refuses duplicates, which are always a mistake in these lists.
func checkList(tier, field string, list []string, one func(field, s string) string) *issue {
	for i, s := range list {
		reason := one(field, s)
		if reason == "" && slices.Index(list, s) < i {
			reason = fmt.Sprintf("%s lists %q twice", field, s)
		}
		if reason != "" {
			return &issue{tier: tier, field: field, index: i, reason: reason}
		}
	}
	return nil
}

func checkHostPattern(field, s string) string {
	if s == "" {
		return fmt.Sprintf("%s has an empty pattern: write one such as \"*.staging.example.com\"", field)
	}
	// Patterns end up in ssh_config "Match host" lines that sshward
	// ssh-config writes; these characters would split or end such a line.
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || strings.ContainsRune(",\"'#\\", r) {
			return fmt.Sprintf("%s pattern %q contains %q: ssh_config patterns may not hold whitespace, commas, quotes, '#' or '\\'", field, s, r)
		}
	}
	return ""
}

// checkGroup accepts what identity providers send as group names, spaces
// included ("SRE Team"), but not control characters or surrounding spaces,
// which are always a copy-and-paste accident.
func checkGroup(field, s string) string {
	if s == "" || len(s) > 256 || strings.TrimSpace(s) != s ||
		strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		return fmt.Sprintf("%s group %q must be a non-empty name without control characters or surrounding spaces", field, s)
	}
	return ""
}

func checkExtension(field, s string) string {
	if known := KnownExtensions(); !slices.Contains(known, s) {
		return fmt.Sprintf("%s entry %q is not an extension sshward knows: use %s", field, s, strings.Join(known, ", "))
	}
	return ""
}

func checkPrincipals(tier string, m map[string][]string) *issue {
	if len(m) == 0 {
		return fieldIssue(tier, "principals", `principals is empty: map at least one group to logins, e.g. principals: {engineers: ["{{user}}"]}`)
	}
	groups := make([]string, 0, len(m))
	for g := range m {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	for _, g := range groups {
		at := "principals." + g
		if reason := checkGroup("principals", g); reason != "" {
			return &issue{tier: tier, field: "principals", at: at, index: -1, reason: reason}
		}
		if len(m[g]) == 0 {
			return &issue{tier: tier, field: "principals", at: at, index: -1,
				reason: fmt.Sprintf("principals for group %q is empty: list at least one login or remove the group", g)}
		}
		if is := checkList(tier, "principals", m[g], checkTemplate); is != nil {
			is.at = at
			return is
		}
	}
	return nil
}

// checkTemplate accepts a login name or a template using {{user}} whose
// literal parts could form one.
func checkTemplate(field, s string) string {
	probe := strings.ReplaceAll(s, UserPlaceholder, "u")
	switch {
	case strings.Contains(probe, "{{") || strings.Contains(probe, "}}"):
		return fmt.Sprintf("%s entry %q has an unknown placeholder: only %s is supported", field, s, UserPlaceholder)
	case IsValidPrincipal(probe):
		return ""
	case probe != s:
		return fmt.Sprintf("%s template %q can never expand to a unix login name", field, s)
	}
	return fmt.Sprintf("%s entry %q is not a unix login name (a letter or '_', then letters, digits, '_', '.', '-'; at most 32)", field, s)
}

func checkSourceAddress(tier, s string) *issue {
	if s == "" || s == SourceAddressClient {
		return nil
	}
	const field = "source_address"
	for i, part := range strings.Split(s, ",") {
		reason := ""
		if part == SourceAddressClient {
			reason = "source_address is either client or a list of CIDRs, not both"
		} else if strings.Contains(part, "/") {
			pfx, err := netip.ParsePrefix(part)
			switch {
			case err != nil:
				reason = fmt.Sprintf("source_address entry %q is not a CIDR such as 10.0.0.0/8", part)
			case pfx != pfx.Masked():
				reason = fmt.Sprintf("source_address entry %q has host bits set: write %s", part, pfx.Masked())
			}
		} else if a, err := netip.ParseAddr(part); err != nil || a.Zone() != "" {
			reason = fmt.Sprintf("source_address entry %q is not client, an IP address or a CIDR such as 10.0.0.0/8", part)
		}
		if reason != "" {
			return &issue{tier: tier, field: field, index: i, reason: reason}
		}
	}
	return nil
}

func validTierName(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
