package policy

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sshward/sshward/ca/api"
)

// Risk-tiered approvals (issue 12 §3). A tier may list approval rules; the
// first rule whose conditions all hold decides how many approvals a
// certificate needs, from whom, and whether approvers must come from
// another team than the requester. No rule matching: the tier's approvals
// and approvers (the tier default).
//
//	approval_rules:
//	  - name: read-only                     # unique in the tier
//	    principals: [viewer]                # every login asked is one of these
//	    approvals: 0                        # self-service
//	  - name: destructive
//	    principals: [root]
//	    approvals: 2                        # two distinct people
//	    separate_teams: [team-billing, team-db, team-sre]
//	  - name: billing-hosts
//	    labels: {app: billing}              # the scope carries these labels
//	    hosts: ["*.billing.example.com"]    # the scope names hosts, all matching
//	    approvals: 1
//	    approvers: [billing-leads]          # default: the tier's approvers
//	  - name: business-hours
//	    window: {days: mon-fri, from: "09:00", to: "18:00", time_zone: Europe/Berlin}
//	    approvals: 0
//
// Conditions: principals, labels, hosts, window (all that are given must
// hold; a rule with none matches everything). separate_teams: an approver
// must be in one of these groups and share none of them with the
// requester (separation of duties). A single_use tier (break-glass) keeps
// its two-person rule: its rules may ask for more approvals, never fewer.
// What stays the same whatever the rule: default deny (no approvals, no
// certificate), the requester never approves their own request, each
// approver counts once.

// MaxApprovalRules bounds the rules of one tier.
const MaxApprovalRules = 32

// ApprovalRule is one entry of a tier's approval_rules. The zero Name is
// the tier default (TierDefaultRule).
type ApprovalRule struct {
	Name          string
	Principals    []string          // principals: every login asked is one of these
	Labels        map[string]string // labels: the scope carries each of these labels
	Hosts         []string          // hosts: the scope names hosts and each matches a pattern
	Window        *Window           // window: the time of the request is inside
	Approvals     int               // approvals: distinct approvers needed
	Approvers     []string          // approvers: groups (nil: the tier's)
	SeparateTeams []string          // separate_teams: approver from another of these teams
}

// TierDefaultRule names the tier's own approvals when no rule matched.
const TierDefaultRule = "tier default"

// Window is a weekly time window in a named time zone: the listed days,
// from From to To (minutes after midnight, From < To).
type Window struct {
	Days     []time.Weekday
	From, To int
	Zone     string
	loc      *time.Location
}

// Contains reports whether t falls in the window (in its time zone).
func (w *Window) Contains(t time.Time) bool {
	if w == nil || t.IsZero() {
		return false
	}
	lt := t.In(w.loc)
	m := lt.Hour()*60 + lt.Minute()
	return slices.Contains(w.Days, lt.Weekday()) && m >= w.From && m < w.To
}

// String writes the window as the policy does.
func (w *Window) String() string {
	return fmt.Sprintf("%s %s-%s %s", daysString(w.Days), clock(w.From), clock(w.To), w.Zone)
}

// RuleInput is what approval rules look at.
type RuleInput struct {
	Principals []string  // the logins the certificate would carry
	Scope      api.Scope // normalized
	At         time.Time // when the request was made (zero: no window matches)
}

// ApprovalRuleFor returns the first rule of t that matches in, or the tier
// default (Name TierDefaultRule, the tier's approvals and approvers).
func (t *Tier) ApprovalRuleFor(in RuleInput) ApprovalRule {
	for _, r := range t.ApprovalRules {
		if r.matches(in) {
			out := r
			if out.Approvers == nil {
				out.Approvers = t.Approvers
			}
			return out
		}
	}
	return ApprovalRule{Name: TierDefaultRule, Approvals: t.Approvals, Approvers: t.Approvers}
}

func (r *ApprovalRule) matches(in RuleInput) bool {
	if r.Principals != nil && (len(in.Principals) == 0 || !subset(in.Principals, r.Principals)) {
		return false
	}
	for k, v := range r.Labels {
		if got, ok := in.Scope.Labels[k]; !ok || got != v {
			return false
		}
	}
	if r.Hosts != nil {
		if len(in.Scope.Hosts) == 0 {
			return false
		}
		for _, h := range in.Scope.Hosts {
			if !slices.ContainsFunc(r.Hosts, func(p string) bool { ok, _ := path.Match(strings.ToLower(p), h); return ok }) {
				return false
			}
		}
	}
	if r.Window != nil && !r.Window.Contains(in.At) {
		return false
	}
	return true
}

// MayApprove reports whether a member of approverGroups may approve, under
// r, a request by a member of requesterGroups; when not, why (one clause
// for a refusal message). The requester's own vote and repeated votes are
// the CA's to refuse: it knows the people.
func (r *ApprovalRule) MayApprove(approverGroups, requesterGroups []string) (bool, string) {
	if !slices.ContainsFunc(approverGroups, func(g string) bool { return slices.Contains(r.Approvers, g) }) {
		return false, fmt.Sprintf("approving under rule %q needs membership in %s", r.Name, strings.Join(r.Approvers, ", "))
	}
	if len(r.SeparateTeams) == 0 {
		return true, ""
	}
	var mine []string
	for _, g := range approverGroups {
		if slices.Contains(r.SeparateTeams, g) {
			if slices.Contains(requesterGroups, g) {
				return false, fmt.Sprintf("rule %q needs an approver from another team than the requester's, and you are both in %s (separation of duties)", r.Name, g)
			}
			mine = append(mine, g)
		}
	}
	if len(mine) == 0 {
		return false, fmt.Sprintf("rule %q needs an approver from one of the teams %s other than the requester's (separation of duties)", r.Name, strings.Join(r.SeparateTeams, ", "))
	}
	return true, ""
}

func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

var ruleKeys = []string{"name", "principals", "labels", "hosts", "window", "approvals", "approvers", "separate_teams"}
var windowKeys = []string{"days", "from", "to", "time_zone"}

func init() { tierKeys = append(tierKeys, "approval_rules") }

// approvalRules parses a tier's approval_rules list.
func (d *decoder) approvalRules(tier string, kv pair) ([]ApprovalRule, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return nil, err
	}
	if v.Kind != yaml.SequenceNode {
		return nil, &ParseError{Line: v.Line, Tier: tier, Field: kv.key, Reason: "approval_rules must be a list of rules such as [{name: read-only, principals: [viewer], approvals: 0}], not " + kindName(v)}
	}
	if len(v.Content) > MaxApprovalRules {
		return nil, &ParseError{Line: v.Line, Tier: tier, Field: kv.key, Reason: fmt.Sprintf("approval_rules has %d rules, more than %d", len(v.Content), MaxApprovalRules)}
	}
	out := make([]ApprovalRule, 0, len(v.Content))
	for _, c := range v.Content {
		r, err := d.approvalRule(tier, c)
		if err != nil {
			return nil, err
		}
		for _, o := range out {
			if o.Name == r.Name {
				return nil, ruleErr(c, tier, fmt.Sprintf("approval rule name %q is used twice: names must be unique in a tier", r.Name))
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func ruleErr(n *yaml.Node, tier, reason string) *ParseError {
	return &ParseError{Line: n.Line, Tier: tier, Field: "approval_rules", Reason: reason}
}

func (d *decoder) approvalRule(tier string, c *yaml.Node) (ApprovalRule, error) {
	c, err := d.node(c)
	if err != nil {
		return ApprovalRule{}, err
	}
	if c.Kind != yaml.MappingNode {
		return ApprovalRule{}, ruleErr(c, tier, "each approval rule must be a mapping with name: and approvals:, not "+kindName(c))
	}
	var raw struct {
		Name          string            `yaml:"name"`
		Principals    []string          `yaml:"principals"`
		Labels        map[string]string `yaml:"labels"`
		Hosts         []string          `yaml:"hosts"`
		Approvals     *int              `yaml:"approvals"`
		Approvers     []string          `yaml:"approvers"`
		SeparateTeams []string          `yaml:"separate_teams"`
	}
	var window *yaml.Node
	rest := &yaml.Node{Kind: yaml.MappingNode, Line: c.Line}
	for i := 0; i+1 < len(c.Content); i += 2 {
		k := c.Content[i].Value
		switch {
		case !slices.Contains(ruleKeys, k):
			return ApprovalRule{}, ruleErr(c.Content[i], tier, fmt.Sprintf("unknown approval rule key %q: expected one of %s", k, strings.Join(ruleKeys, ", ")))
		case k == "window":
			if window, err = d.node(c.Content[i+1]); err != nil {
				return ApprovalRule{}, err
			}
		default:
			rest.Content = append(rest.Content, c.Content[i], c.Content[i+1])
		}
	}
	if err := rest.Decode(&raw); err != nil {
		return ApprovalRule{}, ruleErr(c, tier, "approval rule: "+strings.TrimPrefix(err.Error(), "yaml: "))
	}
	r := ApprovalRule{Name: raw.Name, Principals: raw.Principals, Labels: raw.Labels, Hosts: raw.Hosts,
		Approvers: raw.Approvers, SeparateTeams: raw.SeparateTeams}
	if raw.Approvals == nil {
		return r, ruleErr(c, tier, fmt.Sprintf("approval rule %q needs approvals: (0 for self-service)", r.Name))
	}
	r.Approvals = *raw.Approvals
	if window != nil {
		if r.Window, err = parseWindow(window); err != nil {
			return r, ruleErr(window, tier, fmt.Sprintf("approval rule %q: window: %v", r.Name, err))
		}
	}
	return r, nil
}

// parseWindow reads {days: mon-fri, from: "09:00", to: "18:00", time_zone: Europe/Berlin}.
func parseWindow(n *yaml.Node) (*Window, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("must be a mapping such as {days: mon-fri, from: \"09:00\", to: \"18:00\", time_zone: Europe/Berlin}")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; !slices.Contains(windowKeys, k) {
			return nil, fmt.Errorf("unknown key %q: expected one of %s", k, strings.Join(windowKeys, ", "))
		}
	}
	var raw struct {
		Days     yaml.Node `yaml:"days"`
		From     string    `yaml:"from"`
		To       string    `yaml:"to"`
		TimeZone string    `yaml:"time_zone"`
	}
	if err := n.Decode(&raw); err != nil {
		return nil, err
	}
	var days []string
	switch raw.Days.Kind {
	case yaml.ScalarNode:
		days = []string{raw.Days.Value}
	case yaml.SequenceNode:
		if err := raw.Days.Decode(&days); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("days is required: e.g. mon-fri or [mon, wed]")
	}
	w := &Window{Zone: raw.TimeZone}
	for _, s := range days {
		ds, err := parseDays(s)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if !slices.Contains(w.Days, d) {
				w.Days = append(w.Days, d)
			}
		}
	}
	slices.Sort(w.Days)
	var err error
	if w.From, err = parseClock(raw.From); err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	if w.To, err = parseClock(raw.To); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	if w.To <= w.From {
		return nil, fmt.Errorf("from %s must be before to %s (a window that spans midnight is two rules)", clock(w.From), clock(w.To))
	}
	if w.Zone == "" {
		return nil, fmt.Errorf("time_zone is required, e.g. Europe/Berlin or UTC")
	}
	if w.loc, err = time.LoadLocation(w.Zone); err != nil || strings.EqualFold(w.Zone, "local") {
		return nil, fmt.Errorf("time_zone %q is not a known IANA time zone such as Europe/Berlin or UTC", w.Zone)
	}
	return w, nil
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

func parseDay(s string) (time.Weekday, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) > 3 {
		s = s[:3]
	}
	i := slices.Index(dayNames, s)
	if i < 0 {
		return 0, fmt.Errorf("day %q is not one of mon, tue, wed, thu, fri, sat, sun", s)
	}
	return time.Weekday(i), nil
}

// parseDays reads "mon", or a range "mon-fri" (wrapping: "fri-mon").
func parseDays(s string) ([]time.Weekday, error) {
	a, b, isRange := strings.Cut(s, "-")
	from, err := parseDay(a)
	if err != nil {
		return nil, err
	}
	if !isRange {
		return []time.Weekday{from}, nil
	}
	to, err := parseDay(b)
	if err != nil {
		return nil, err
	}
	var out []time.Weekday
	for d := from; ; d = (d + 1) % 7 {
		out = append(out, d)
		if d == to {
			return out, nil
		}
	}
}

func daysString(ds []time.Weekday) string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = dayNames[d]
	}
	return strings.Join(out, ",")
}

// parseClock reads "HH:MM" (24:00 allowed as the end of a day).
func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(m) != 2 || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%q is not a time of day such as \"09:00\" (quote it)", s)
	}
	return hh*60 + mm, nil
}

func clock(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }

// checkApprovalRules validates the rules of t against the tier.
func (t *Tier) checkApprovalRules() *issue {
	n := t.Name
	const f = "approval_rules"
	for _, r := range t.ApprovalRules {
		switch {
		case r.Name == "" || !validRequestID(r.Name):
			return fieldIssue(n, f, "approval rule name %q must be 1-64 letters, digits, '.', '_' or '-'", r.Name)
		case r.Approvals < 0 || r.Approvals > 16:
			return fieldIssue(n, f, "approval rule %q: approvals %d must be from 0 to 16", r.Name, r.Approvals)
		case t.SingleUse && r.Approvals < t.Approvals:
			return fieldIssue(n, f, "approval rule %q asks for %d approvals, fewer than the %d of single-use tier %s: break-glass keeps its two-person rule, so rules there may only ask for more", r.Name, r.Approvals, t.Approvals, n)
		case r.Approvals > 0 && len(r.Approvers) == 0 && len(t.Approvers) == 0:
			return fieldIssue(n, f, "approval rule %q needs %d approvals but neither it nor the tier names approvers: add approvers: [group]", r.Name, r.Approvals)
		case len(r.SeparateTeams) > 0 && r.Approvals == 0:
			return fieldIssue(n, f, "approval rule %q sets separate_teams but needs no approvals: drop separate_teams or ask for approvals", r.Name)
		case r.Principals != nil && len(r.Principals) == 0, r.Hosts != nil && len(r.Hosts) == 0:
			return fieldIssue(n, f, "approval rule %q has an empty principals: or hosts: list, which matches nothing: list some or drop the key", r.Name)
		}
		for _, p := range r.Principals {
			if !IsValidPrincipal(p) {
				return fieldIssue(n, f, "approval rule %q: principal %q is not a login name", r.Name, p)
			}
		}
		if err := api.CheckLabels(r.Labels); err != nil {
			return fieldIssue(n, f, "approval rule %q: %v", r.Name, err)
		}
		for _, h := range r.Hosts {
			if why := checkHostPattern("hosts", h); why != "" {
				return fieldIssue(n, f, "approval rule %q: %s", r.Name, why)
			}
			if _, err := path.Match(h, ""); err != nil {
				return fieldIssue(n, f, "approval rule %q: host pattern %q is malformed", r.Name, h)
			}
		}
		for _, g := range slices.Concat(r.Approvers, r.SeparateTeams) {
			if why := checkGroup("approvers", g); why != "" {
				return fieldIssue(n, f, "approval rule %q: %s", r.Name, why)
			}
		}
	}
	return nil
}

// approvalRulesNode writes the rules (Marshal).
func (t *Tier) approvalRulesNode(n *yaml.Node) {
	if len(t.ApprovalRules) == 0 {
		return
	}
	list := &yaml.Node{Kind: yaml.SequenceNode}
	for _, r := range t.ApprovalRules {
		m := &yaml.Node{Kind: yaml.MappingNode}
		put(m, "name", stringNode(r.Name))
		putList(m, "principals", r.Principals)
		if len(r.Labels) > 0 {
			ls := &yaml.Node{Kind: yaml.MappingNode}
			for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
				put(ls, k, stringNode(r.Labels[k]))
			}
			put(m, "labels", ls)
		}
		putList(m, "hosts", r.Hosts)
		if w := r.Window; w != nil {
			wn := &yaml.Node{Kind: yaml.MappingNode}
			days := make([]string, len(w.Days))
			for i, d := range w.Days {
				days[i] = dayNames[d]
			}
			put(wn, "days", listNode(days))
			put(wn, "from", stringNode(clock(w.From)))
			put(wn, "to", stringNode(clock(w.To)))
			put(wn, "time_zone", stringNode(w.Zone))
			put(m, "window", wn)
		}
		put(m, "approvals", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(r.Approvals)})
		putList(m, "approvers", r.Approvers)
		putList(m, "separate_teams", r.SeparateTeams)
		list.Content = append(list.Content, m)
	}
	put(n, "approval_rules", list)
}

// RuleFor is the approval rule that applies to r in t: the principals r
// asks for (all the identity's when none), its scope and time.
func (t *Tier) RuleFor(r Request) ApprovalRule {
	ps := r.Principals
	if len(ps) == 0 {
		ps = t.PrincipalsFor(r.Identity)
	}
	return t.ApprovalRuleFor(RuleInput{Principals: ps, Scope: r.Scope, At: r.Now})
}

// ApprovalsNeeded is the approvals a request like r needs, and the rule
// that says so: the matching rule's, else the tier default (for a
// requester on call, oncall_approvals when the tier sets it).
func (t *Tier) ApprovalsNeeded(r Request) (int, ApprovalRule) {
	rule := t.RuleFor(r)
	if rule.Name == TierDefaultRule {
		rule.Approvals = t.approvalsFor(r)
	}
	return rule.Approvals, rule
}

// requireApprovals refuses r when its rule needs approvals that r does not
// have (default deny).
func (t *Tier) requireApprovals(r Request) error {
	need, rule := t.ApprovalsNeeded(r)
	if need == 0 || r.Approved {
		return nil
	}
	scope := ""
	if !r.Scope.IsZero() {
		scope = " with the same --host/--label"
	}
	which := "the tier default"
	if rule.Name != TierDefaultRule {
		which = fmt.Sprintf("approval rule %q", rule.Name)
	}
	return refuse(ErrApprovalRequired, "tier %s needs an access request approved by %d of %s (%s): run `sshward request --tier %s --reason \"...\"`%s and wait for the approvals",
		t.Name, need, strings.Join(rule.Approvers, ", "), which, t.Name, scope)
}

// ApprovalsWaivable reports whether some rule of t asks fewer approvals
// than the tier default, so that a certificate may come without a request.
func (t *Tier) ApprovalsWaivable() bool {
	return slices.ContainsFunc(t.ApprovalRules, func(r ApprovalRule) bool { return r.Approvals < t.Approvals })
}
