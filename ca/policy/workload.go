package policy

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Workload identity (issue 12 §1): CI jobs exchange the OIDC token their
// platform gives them for a minute-scale certificate. Top-level key:
//
//	workload_issuers:
//	  - issuer: https://token.actions.githubusercontent.com
//	    audience: https://ca.example.com    # the aud the CI job asks for
//	    max_age: 10m                         # token age from iat (default 10m)
//	    cert_ttl: 5m                         # certificate lifetime (default 5m)
//	    rules:                               # first match for the tier wins
//	      - tier: production
//	        principals: [deploy]
//	        claims: {repository: org/deploy, ref: refs/heads/main, environment: production}
//
// Default deny: a token matches a rule only when every listed claim matches
// (exact, or a path.Match glob when the pattern holds *, ? or [), and a tier
// no rule names is refused. The JWKS comes from the issuer's discovery
// document. A rule is the policy author's standing approval: a tier's
// approvals, approvers and mfa do not apply to workloads (they have no
// person to ask); requires_oncall tiers cannot have workload rules.

// Workload defaults and bounds.
const (
	DefaultWorkloadMaxAge  = 10 * time.Minute
	DefaultWorkloadCertTTL = 5 * time.Minute
	// MaxWorkloadMaxAge and MaxWorkloadCertTTL keep workload access short:
	// a CI token is minutes old, and so is the certificate it buys.
	MaxWorkloadMaxAge  = time.Hour
	MaxWorkloadCertTTL = time.Hour
	// MaxWorkloadRules bounds the rules of one issuer.
	MaxWorkloadRules = 256
)

// WorkloadIssuer is one entry under workload_issuers:.
type WorkloadIssuer struct {
	Issuer   string        // issuer: the iss claim, and where discovery lives
	Audience string        // audience: the aud the token must carry
	MaxAge   time.Duration // max_age: oldest token accepted (from iat)
	CertTTL  time.Duration // cert_ttl: certificate lifetime
	Rules    []WorkloadRule
}

// WorkloadRule is one entry under rules: of an issuer.
type WorkloadRule struct {
	Tier       string            // tier: the tier the rule grants
	Principals []string          // principals: logins granted
	Claims     map[string]string // claims: claim name -> value or glob
}

var (
	workloadIssuerKeys = []string{"issuer", "audience", "max_age", "cert_ttl", "rules"}
	workloadRuleKeys   = []string{"tier", "principals", "claims"}
)

func init() { topKeys = append(topKeys, "workload_issuers") }

// WorkloadRequest asks what a certificate for a verified workload may carry.
type WorkloadRequest struct {
	Tier       string
	Principals []string // from the rule that matched
	TTL        time.Duration
	ClientAddr string
	Now        time.Time
}

// GrantWorkload decides what a certificate for a workload that matched a
// rule of tier may carry: the rule's principals, ttl capped at the tier's
// max_ttl, and the tier's extensions and critical options.
func (p *Policy) GrantWorkload(r WorkloadRequest) (*Grant, error) {
	t, ok := p.Tier(r.Tier)
	if !ok {
		return nil, refuse(ErrUnknownTier, "unknown tier %q: ask for one of %s", r.Tier, strings.Join(p.TierNames(), ", "))
	}
	principals := sortedSet(slices.Clone(r.Principals))
	if len(principals) == 0 {
		return nil, refuse(ErrNoPrincipals, "the workload rule for tier %s grants no principals", t.Name)
	}
	ttl := min(r.TTL, t.MaxTTL)
	if ttl < MinTTL {
		return nil, &TTLError{Tier: t.Name, Asked: ttl, Min: MinTTL, Max: t.MaxTTL}
	}
	return t.grant(Request{Tier: t.Name, ClientAddr: r.ClientAddr, Now: r.Now}, principals, ttl)
}

func (d *decoder) workloadIssuers(kv pair, p *Policy) error {
	v, err := d.node(kv.val)
	if err != nil {
		return err
	}
	if v.Kind != yaml.SequenceNode {
		return &ParseError{Line: v.Line, Field: kv.key, Reason: "workload_issuers must be a list of issuers such as [{issuer: https://token.actions.githubusercontent.com, audience: sshward, rules: [...]}], not " + kindName(v)}
	}
	for i, c := range v.Content {
		c, err := d.node(c)
		if err != nil {
			return err
		}
		at := fmt.Sprintf("workload_issuers[%d]", i)
		d.lines[lineKey{"", at, -1}] = c.Line
		if c.Kind != yaml.MappingNode {
			return &ParseError{Line: c.Line, Field: kv.key, Reason: "each workload issuer must be a mapping with issuer, audience and rules, not " + kindName(c)}
		}
		ps, err := d.pairs(c, "", dupKey)
		if err != nil {
			return err
		}
		iss := WorkloadIssuer{MaxAge: DefaultWorkloadMaxAge, CertTTL: DefaultWorkloadCertTTL}
		for _, f := range ps {
			d.lines[lineKey{"", at + "." + f.key, -1}] = f.keyNode.Line
			if !slices.Contains(workloadIssuerKeys, f.key) {
				return unknownKey("", f, workloadIssuerKeys)
			}
			switch f.key {
			case "issuer":
				err = d.str("", f, &iss.Issuer)
			case "audience":
				err = d.str("", f, &iss.Audience)
			case "max_age":
				err = d.duration("", f, &iss.MaxAge)
			case "cert_ttl":
				err = d.duration("", f, &iss.CertTTL)
			case "rules":
				iss.Rules, err = d.workloadRules(at, f)
			}
			if err != nil {
				return err
			}
		}
		p.WorkloadIssuers = append(p.WorkloadIssuers, iss)
	}
	return nil
}

func (d *decoder) workloadRules(at string, kv pair) ([]WorkloadRule, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return nil, err
	}
	if v.Kind != yaml.SequenceNode {
		return nil, &ParseError{Line: v.Line, Field: "rules", Reason: "rules must be a list such as [{tier: production, principals: [deploy], claims: {repository: org/deploy}}], not " + kindName(v)}
	}
	var out []WorkloadRule
	for j, c := range v.Content {
		c, err := d.node(c)
		if err != nil {
			return nil, err
		}
		rat := fmt.Sprintf("%s.rules[%d]", at, j)
		d.lines[lineKey{"", rat, -1}] = c.Line
		if c.Kind != yaml.MappingNode {
			return nil, &ParseError{Line: c.Line, Field: "rules", Reason: "each rule must be a mapping with tier, principals and claims, not " + kindName(c)}
		}
		ps, err := d.pairs(c, "", dupKey)
		if err != nil {
			return nil, err
		}
		var r WorkloadRule
		for _, f := range ps {
			d.lines[lineKey{"", rat + "." + f.key, -1}] = f.keyNode.Line
			if !slices.Contains(workloadRuleKeys, f.key) {
				return nil, unknownKey("", f, workloadRuleKeys)
			}
			switch f.key {
			case "tier":
				err = d.str("", f, &r.Tier)
			case "principals":
				r.Principals, err = d.strings("", rat+".principals", f)
			case "claims":
				r.Claims, err = d.claims(f)
			}
			if err != nil {
				return nil, err
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func (d *decoder) claims(kv pair) (map[string]string, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return nil, err
	}
	if v.Kind != yaml.MappingNode {
		return nil, &ParseError{Line: v.Line, Field: "claims", Reason: "claims must map claim names to values, e.g. {repository: org/deploy, ref: refs/heads/main}, not " + kindName(v)}
	}
	ps, err := d.pairs(v, "", dupKey)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ps))
	for _, f := range ps {
		var s string
		if err := d.str("", f, &s); err != nil {
			return nil, err
		}
		out[f.key] = s
	}
	return out, nil
}

// checkWorkload validates workload_issuers against the tiers.
func (p *Policy) checkWorkload() *issue {
	seen := map[string]bool{}
	for i, iss := range p.WorkloadIssuers {
		at := fmt.Sprintf("workload_issuers[%d]", i)
		bad := func(field, format string, args ...any) *issue {
			is := fieldIssue("", "workload_issuers", format, args...)
			is.at = at
			if field != "" {
				is.at = at + "." + field
			}
			return is
		}
		if reason := checkIssuerURL(iss.Issuer); reason != "" {
			field := "issuer"
			if iss.Issuer == "" {
				field = ""
			}
			return bad(field, "workload issuer %d: %s", i+1, reason)
		}
		if seen[iss.Issuer] {
			return bad("issuer", "workload issuer %q is listed twice: merge its rules into one entry", iss.Issuer)
		}
		seen[iss.Issuer] = true
		if strings.TrimSpace(iss.Audience) == "" {
			return bad("", "workload issuer %q needs an audience: the aud the CI job asks its token for (e.g. the CA's URL), so tokens minted for other services are refused", iss.Issuer)
		}
		if iss.MaxAge < 30*time.Second || iss.MaxAge > MaxWorkloadMaxAge {
			return bad("max_age", "workload issuer %q: max_age %s must be between 30s and %s", iss.Issuer, FormatDuration(iss.MaxAge), FormatDuration(MaxWorkloadMaxAge))
		}
		if iss.CertTTL < MinTTL || iss.CertTTL > MaxWorkloadCertTTL {
			return bad("cert_ttl", "workload issuer %q: cert_ttl %s must be between %s and %s", iss.Issuer, FormatDuration(iss.CertTTL), FormatDuration(MinTTL), FormatDuration(MaxWorkloadCertTTL))
		}
		if len(iss.Rules) == 0 {
			return bad("", "workload issuer %q has no rules: with none it grants nothing (list at least one rule, or remove the issuer)", iss.Issuer)
		}
		if len(iss.Rules) > MaxWorkloadRules {
			return bad("rules", "workload issuer %q has %d rules, more than %d", iss.Issuer, len(iss.Rules), MaxWorkloadRules)
		}
		for j, r := range iss.Rules {
			if is := p.checkWorkloadRule(iss.Issuer, fmt.Sprintf("%s.rules[%d]", at, j), j, r); is != nil {
				return is
			}
		}
	}
	return nil
}

func (p *Policy) checkWorkloadRule(issuer, at string, j int, r WorkloadRule) *issue {
	bad := func(field, format string, args ...any) *issue {
		is := fieldIssue("", "workload_issuers", "workload issuer %q rule %d: %s", issuer, j+1, fmt.Sprintf(format, args...))
		is.at = at
		if field != "" {
			is.at = at + "." + field
		}
		return is
	}
	t, ok := p.Tier(r.Tier)
	switch {
	case r.Tier == "":
		return bad("", "tier is required")
	case !ok:
		return bad("tier", "unknown tier %q", r.Tier)
	case t.RequiresOnCall:
		return bad("tier", "tier %s requires the user to be on call, which a workload never is: give pipelines their own tier", r.Tier)
	case len(r.Principals) == 0:
		return bad("", "principals is required: list the logins the workload gets, e.g. [deploy]")
	case len(r.Claims) == 0:
		return bad("", "claims is required: a rule without claims would admit every token of the issuer (name at least repository)")
	}
	for k, pr := range r.Principals {
		if !IsValidPrincipal(pr) {
			return bad("principals", "principal %q is not a valid login name", pr)
		}
		if slices.Index(r.Principals, pr) < k {
			return bad("principals", "principals lists %q twice", pr)
		}
	}
	names := make([]string, 0, len(r.Claims))
	for n := range r.Claims {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		want := r.Claims[n]
		if n == "" || strings.ContainsFunc(n, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
			return bad("claims", "claim name %q must be non-empty without spaces or control characters", n)
		}
		if want == "" {
			return bad("claims", "claim %s has an empty value: write the value it must have", n)
		}
		if _, err := path.Match(want, ""); err != nil {
			return bad("claims", "claim %s pattern %q is not a valid glob: %v", n, want, err)
		}
		if want == "*" {
			return bad("claims", "claim %s pattern \"*\" matches anything: name the value, or leave the claim out", n)
		}
	}
	return nil
}

// checkIssuerURL accepts https URLs, and http only on loopback (tests, a
// token service on the CA's machine).
func checkIssuerURL(s string) string {
	u, err := url.Parse(s)
	if s == "" || err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Sprintf("issuer %q must be an https URL without query or fragment, exactly as the token's iss claim", s)
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return ""
		}
	}
	return fmt.Sprintf("issuer %q must use https (http only on loopback): the CA fetches its signing keys from it", s)
}

// workloadNode writes workload_issuers (Marshal).
func (p *Policy) workloadNode(root *yaml.Node) {
	if len(p.WorkloadIssuers) == 0 {
		return
	}
	list := &yaml.Node{Kind: yaml.SequenceNode}
	for _, iss := range p.WorkloadIssuers {
		n := &yaml.Node{Kind: yaml.MappingNode}
		put(n, "issuer", stringNode(iss.Issuer))
		put(n, "audience", stringNode(iss.Audience))
		put(n, "max_age", durationNode(iss.MaxAge))
		put(n, "cert_ttl", durationNode(iss.CertTTL))
		rules := &yaml.Node{Kind: yaml.SequenceNode}
		for _, r := range iss.Rules {
			rn := &yaml.Node{Kind: yaml.MappingNode}
			put(rn, "tier", stringNode(r.Tier))
			put(rn, "principals", listNode(r.Principals))
			claims := &yaml.Node{Kind: yaml.MappingNode}
			names := make([]string, 0, len(r.Claims))
			for k := range r.Claims {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				put(claims, k, stringNode(r.Claims[k]))
			}
			put(rn, "claims", claims)
			rules.Content = append(rules.Content, rn)
		}
		put(n, "rules", rules)
		list.Content = append(list.Content, n)
	}
	put(root, "workload_issuers", list)
}
