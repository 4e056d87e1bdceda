package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxValues bounds how many YAML nodes Parse visits, counting every visit
// through an alias or merge key, so a small file of nested aliases cannot
// make it work for long.
const maxValues = 100_000

var (
	topKeys  = []string{"session_ttl", "host_cert_ttl", "tiers"}
	tierKeys = []string{"hosts", "ttl", "max_ttl", "mfa", "approvals", "approvers", "record_input",
		"single_use", "extensions", "principals", "source_address", "force_command",
		"on_recording_failure", "end_session_on_expiry", "request_ttl", "trusted_on", "revocation_max_stale"}
)

// Parse reads a policy file (schema in the package documentation). It is
// strict: unknown keys, wrong types and invalid values are refused with a
// *ParseError naming the line, tier and field. It returns either a complete,
// valid policy or an error, never a partial policy.
func Parse(data []byte) (*Policy, error) {
	if len(data) > MaxPolicyBytes {
		return nil, &ParseError{Reason: fmt.Sprintf("policy is %d bytes, more than the %d-byte limit", len(data), MaxPolicyBytes)}
	}
	doc, err := document(data)
	if err != nil {
		return nil, err
	}
	d := &decoder{budget: maxValues, lines: map[lineKey]int{}, merging: map[*yaml.Node]bool{}}
	p, err := d.policy(doc)
	if err != nil {
		return nil, err
	}
	if is := p.check(); is != nil {
		return nil, is.parseError(d.lines)
	}
	return p, nil
}

func errEmpty() error {
	return &ParseError{Field: "tiers", Reason: "policy is empty: it needs a tiers: section (sshward-ca init writes an example policy)"}
}

// document returns the single YAML document in data. Empty documents after it
// (a trailing "---") are ignored; anything more is refused.
func document(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errEmpty()
		}
		return nil, yamlError(err)
	}
	for {
		var more yaml.Node
		err := dec.Decode(&more)
		if errors.Is(err, io.EOF) {
			return &doc, nil
		}
		if err != nil {
			return nil, yamlError(err)
		}
		if len(more.Content) > 0 && !isNull(more.Content[0]) {
			return nil, &ParseError{Line: more.Content[0].Line, Reason: "policy holds more than one YAML document: keep everything in one (remove the extra ---)"}
		}
	}
}

// yamlError turns a yaml.v3 syntax error into a ParseError. yaml.v3 has no
// typed syntax error, so the line is read from its "yaml: line N: " prefix;
// if the format ever changes we only lose the line number.
func yamlError(err error) *ParseError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil && n > 0 {
				line, msg = n, text
			}
		}
	}
	return &ParseError{Line: line, Reason: "invalid YAML: " + msg}
}

// lineKey locates a value for error messages: field "" is the tier's own key,
// index -1 the field's key, index ≥ 0 a list element. Principals of a group
// use field "principals.GROUP".
type lineKey struct {
	tier, field string
	index       int
}

type decoder struct {
	budget  int
	lines   map[lineKey]int
	merging map[*yaml.Node]bool // mappings whose merge keys are being expanded
}

type pair struct {
	key     string
	keyNode *yaml.Node
	val     *yaml.Node
}

// node resolves an alias and charges one visit against the budget.
func (d *decoder) node(n *yaml.Node) (*yaml.Node, error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	d.budget--
	if d.budget < 0 {
		return nil, &ParseError{Reason: fmt.Sprintf("policy expands to more than %d values: check its anchors and aliases", maxValues)}
	}
	if n.Kind == yaml.AliasNode {
		return nil, &ParseError{Line: n.Line, Reason: "alias refers to nothing"}
	}
	return n, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a single value"
}

// pairs returns the entries of mapping n in file order with YAML merge keys
// ("<<: *anchor") expanded: explicit keys win over merged ones, and among
// merged mappings the first wins. dup words the error for a repeated key.
func (d *decoder) pairs(n *yaml.Node, tier string, dup func(key string, first int) (field, reason string)) ([]pair, error) {
	if d.merging[n] {
		return nil, &ParseError{Line: n.Line, Tier: tier, Reason: "a mapping merges itself (<<): remove the cycle"}
	}
	d.merging[n] = true
	defer delete(d.merging, n)

	var own, merged []pair
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, err := d.node(n.Content[i])
		if err != nil {
			return nil, err
		}
		if k.Kind != yaml.ScalarNode {
			return nil, &ParseError{Line: k.Line, Tier: tier, Reason: fmt.Sprintf("a key must be a plain name, not %s", kindName(k))}
		}
		if k.ShortTag() == "!!merge" {
			ps, err := d.merge(n.Content[i+1], tier, dup)
			if err != nil {
				return nil, err
			}
			merged = append(merged, ps...)
			continue
		}
		if first, ok := seen[k.Value]; ok {
			field, reason := dup(k.Value, first)
			return nil, &ParseError{Line: k.Line, Tier: tier, Field: field, Reason: reason}
		}
		seen[k.Value] = k.Line
		own = append(own, pair{key: k.Value, keyNode: k, val: n.Content[i+1]})
	}
	out := own
	for _, m := range merged {
		if _, ok := seen[m.key]; !ok {
			seen[m.key] = m.keyNode.Line
			out = append(out, m)
		}
	}
	return out, nil
}

func (d *decoder) merge(v *yaml.Node, tier string, dup func(string, int) (string, string)) ([]pair, error) {
	v, err := d.node(v)
	if err != nil {
		return nil, err
	}
	switch v.Kind {
	case yaml.MappingNode:
		return d.pairs(v, tier, dup)
	case yaml.SequenceNode:
		var out []pair
		for _, c := range v.Content {
			c, err := d.node(c)
			if err != nil {
				return nil, err
			}
			if c.Kind != yaml.MappingNode {
				return nil, errMerge(c, tier)
			}
			ps, err := d.pairs(c, tier, dup)
			if err != nil {
				return nil, err
			}
			out = append(out, ps...)
		}
		return out, nil
	}
	return nil, errMerge(v, tier)
}

func errMerge(n *yaml.Node, tier string) error {
	return &ParseError{Line: n.Line, Tier: tier, Reason: fmt.Sprintf("<< must merge a mapping or a list of mappings, not %s", kindName(n))}
}

func dupKey(key string, first int) (string, string) {
	return key, fmt.Sprintf("%q appears twice (first at line %d): keep one", key, first)
}

func dupTier(key string, first int) (string, string) {
	return "tiers", fmt.Sprintf("tiers defines %q twice (first at line %d): keep one", key, first)
}

func dupGroup(key string, first int) (string, string) {
	return "principals", fmt.Sprintf("principals names group %q twice (first at line %d): merge the lists", key, first)
}

func (d *decoder) policy(doc *yaml.Node) (*Policy, error) {
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, errEmpty()
		}
		root = root.Content[0]
	}
	root, err := d.node(root)
	if err != nil {
		return nil, err
	}
	if isNull(root) {
		return nil, errEmpty()
	}
	if root.Kind != yaml.MappingNode {
		return nil, &ParseError{Line: root.Line, Reason: fmt.Sprintf("the policy must be a mapping with a tiers: section, not %s", kindName(root))}
	}
	ps, err := d.pairs(root, "", dupKey)
	if err != nil {
		return nil, err
	}
	p := &Policy{SessionTTL: DefaultSessionTTL, HostCertTTL: DefaultHostCertTTL}
	for _, kv := range ps {
		d.lines[lineKey{"", kv.key, -1}] = kv.keyNode.Line
		if !slices.Contains(topKeys, kv.key) {
			return nil, unknownKey("", kv, topKeys)
		}
		null, err := d.null(kv)
		if err != nil {
			return nil, err
		}
		if null {
			continue
		}
		switch kv.key {
		case "session_ttl":
			err = d.duration("", kv, &p.SessionTTL)
		case "host_cert_ttl":
			err = d.duration("", kv, &p.HostCertTTL)
		case "tiers":
			p.Tiers, err = d.tiers(kv)
		case "workload_issuers": // workload.go
			err = d.workloadIssuers(kv, p)
		default: // keys of other files (oversight.go)
			err = d.oversightTopKey(kv, p)
		}
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

// null reports whether a key has an empty value; an empty value means the
// same as leaving the key out.
func (d *decoder) null(kv pair) (bool, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return false, err
	}
	return isNull(v), nil
}

func (d *decoder) tiers(kv pair) ([]*Tier, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return nil, err
	}
	if v.Kind != yaml.MappingNode {
		return nil, &ParseError{Line: v.Line, Field: "tiers", Reason: fmt.Sprintf("tiers must be a mapping of tier name to settings, not %s", kindName(v))}
	}
	ps, err := d.pairs(v, "", dupTier)
	if err != nil {
		return nil, err
	}
	tiers := make([]*Tier, 0, len(ps))
	for _, tp := range ps {
		t, err := d.tier(tp)
		if err != nil {
			return nil, err
		}
		tiers = append(tiers, t)
	}
	return tiers, nil
}

func (d *decoder) tier(tp pair) (*Tier, error) {
	name := tp.key
	d.lines[lineKey{name, "", -1}] = tp.keyNode.Line
	t := &Tier{Name: name, OnRecordingFailure: RecordingFailClosed, RequestTTL: DefaultRequestTTL, RevocationMaxStale: DefaultRevocationMaxStale}
	v, err := d.node(tp.val)
	if err != nil {
		return nil, err
	}
	var ps []pair
	switch {
	case isNull(v):
	case v.Kind == yaml.MappingNode:
		if ps, err = d.pairs(v, name, dupKey); err != nil {
			return nil, err
		}
	default:
		return nil, &ParseError{Line: v.Line, Tier: name, Reason: fmt.Sprintf("tier settings must be a mapping (ttl:, principals:, …), not %s", kindName(v))}
	}
	set := map[string]bool{}
	for _, kv := range ps {
		d.lines[lineKey{name, kv.key, -1}] = kv.keyNode.Line
		if !slices.Contains(tierKeys, kv.key) {
			return nil, unknownKey(name, kv, tierKeys)
		}
		null, err := d.null(kv)
		if err != nil {
			return nil, err
		}
		if null {
			continue
		}
		set[kv.key] = true
		switch kv.key {
		case "hosts":
			t.Hosts, err = d.strings(name, kv.key, kv)
		case "ttl":
			err = d.duration(name, kv, &t.TTL)
		case "max_ttl":
			err = d.duration(name, kv, &t.MaxTTL)
		case "mfa":
			err = d.boolean(name, kv, &t.MFA)
		case "approvals":
			err = d.integer(name, kv, &t.Approvals)
		case "approvers":
			t.Approvers, err = d.strings(name, kv.key, kv)
		case "record_input":
			err = d.boolean(name, kv, &t.RecordInput)
		case "single_use":
			err = d.boolean(name, kv, &t.SingleUse)
		case "extensions":
			t.Extensions, err = d.strings(name, kv.key, kv)
		case "principals":
			t.Principals, err = d.principals(name, kv)
		case "source_address":
			t.SourceAddress, err = d.sourceAddress(name, kv)
		case "force_command":
			err = d.str(name, kv, &t.ForceCommand)
		case "on_recording_failure":
			err = d.str(name, kv, &t.OnRecordingFailure)
		case "end_session_on_expiry":
			err = d.boolean(name, kv, &t.EndSessionOnExpiry)
		case "request_ttl":
			err = d.duration(name, kv, &t.RequestTTL)
		case "trusted_on":
			t.TrustedOn, err = d.strings(name, kv.key, kv)
		case "revocation_max_stale":
			err = d.durationOrOff(name, kv, &t.RevocationMaxStale)
		case "bulk_output": // bulkoutput.go
			err = d.bulkOutput(name, kv, t)
		case "flags": // oversight.go
			t.Flags, err = d.flagRules(name, kv)
		case "approval_rules": // approvalrules.go
			t.ApprovalRules, err = d.approvalRules(name, kv)
		default: // keys of other files (oncall.go)
			err = d.onCallKey(name, kv, t)
		}
		if err != nil {
			return nil, err
		}
	}
	if !set["ttl"] {
		return nil, &ParseError{Line: tp.keyNode.Line, Tier: name, Field: "ttl", Reason: "ttl is required: say how long a certificate lasts, e.g. ttl: 15m"}
	}
	if !set["max_ttl"] {
		t.MaxTTL = t.TTL
	}
	return t, nil
}

func unknownKey(tier string, kv pair, known []string) *ParseError {
	reason := fmt.Sprintf("unknown key %q", kv.key)
	if s := closest(kv.key, known); s != "" {
		reason += fmt.Sprintf(": did you mean %s?", s)
	} else {
		reason += ": expected one of " + strings.Join(known, ", ")
	}
	return &ParseError{Line: kv.keyNode.Line, Tier: tier, Field: kv.key, Reason: reason}
}

// scalar returns kv's value if it is a single value.
func (d *decoder) scalar(tier string, kv pair, want string) (*yaml.Node, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return nil, err
	}
	if v.Kind != yaml.ScalarNode {
		return nil, &ParseError{Line: v.Line, Tier: tier, Field: kv.key, Reason: fmt.Sprintf("%s must be %s, not %s", kv.key, want, kindName(v))}
	}
	return v, nil
}

func (d *decoder) duration(tier string, kv pair, out *time.Duration) error {
	v, err := d.scalar(tier, kv, "a duration such as 15m")
	if err != nil {
		return err
	}
	dur, err := time.ParseDuration(v.Value)
	if err != nil {
		reason := fmt.Sprintf("%s %q is not a duration: write one such as 15m, 2h or 1h30m", kv.key, v.Value)
		if _, err := strconv.ParseInt(v.Value, 10, 64); err == nil {
			reason = fmt.Sprintf("%s %s needs a unit: write %sm for minutes or %ss for seconds", kv.key, v.Value, v.Value, v.Value)
		}
		return &ParseError{Line: v.Line, Tier: tier, Field: kv.key, Reason: reason}
	}
	*out = dur
	return nil
}

// durationOrOff reads a duration, or "off" (also false or 0) for none.
func (d *decoder) durationOrOff(tier string, kv pair, out *time.Duration) error {
	v, err := d.scalar(tier, kv, `a duration such as 5m, or "off"`)
	if err != nil {
		return err
	}
	switch v.Value {
	case "off", "false", "0":
		*out = 0
		return nil
	}
	return d.duration(tier, kv, out)
}

func (d *decoder) boolean(tier string, kv pair, out *bool) error {
	v, err := d.scalar(tier, kv, "true or false")
	if err != nil {
		return err
	}
	if v.ShortTag() != "!!bool" || v.Decode(out) != nil {
		return &ParseError{Line: v.Line, Tier: tier, Field: kv.key, Reason: fmt.Sprintf("%s must be true or false, not %q", kv.key, v.Value)}
	}
	return nil
}

func (d *decoder) integer(tier string, kv pair, out *int) error {
	v, err := d.scalar(tier, kv, "a whole number")
	if err != nil {
		return err
	}
	if v.ShortTag() != "!!int" || v.Decode(out) != nil {
		return &ParseError{Line: v.Line, Tier: tier, Field: kv.key, Reason: fmt.Sprintf("%s must be a whole number, not %q", kv.key, v.Value)}
	}
	return nil
}

func (d *decoder) str(tier string, kv pair, out *string) error {
	v, err := d.scalar(tier, kv, "a string")
	if err != nil {
		return err
	}
	*out = v.Value
	return nil
}

// strings reads a list of single values, recording each element's line under
// (tier, field, index). field also names the list in messages; kv.key is the
// ParseError.Field.
func (d *decoder) strings(tier, field string, kv pair) ([]string, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return nil, err
	}
	if v.Kind != yaml.SequenceNode {
		return nil, &ParseError{Line: v.Line, Tier: tier, Field: kv.key, Reason: fmt.Sprintf("%s must be a list such as [a, b], not %s", field, kindName(v))}
	}
	var out []string
	for i, c := range v.Content {
		c, err := d.node(c)
		if err != nil {
			return nil, err
		}
		if c.Kind != yaml.ScalarNode {
			return nil, &ParseError{Line: c.Line, Tier: tier, Field: kv.key, Reason: fmt.Sprintf("%s entries must be single values, not %s", field, kindName(c))}
		}
		d.lines[lineKey{tier, field, i}] = c.Line
		s := c.Value
		if isNull(c) {
			s = ""
		}
		out = append(out, s)
	}
	return out, nil
}

func (d *decoder) principals(tier string, kv pair) (map[string][]string, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return nil, err
	}
	if v.Kind != yaml.MappingNode {
		return nil, &ParseError{Line: v.Line, Tier: tier, Field: kv.key, Reason: fmt.Sprintf(`principals must map groups to logins, e.g. {sre: ["{{user}}"]}, not %s`, kindName(v))}
	}
	ps, err := d.pairs(v, tier, dupGroup)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(ps))
	for _, gp := range ps {
		field := "principals." + gp.key
		d.lines[lineKey{tier, field, -1}] = gp.keyNode.Line
		out[gp.key] = nil
		null, err := d.null(gp)
		if err != nil {
			return nil, err
		}
		if null {
			continue
		}
		list, err := d.strings(tier, field, pair{key: "principals", keyNode: gp.keyNode, val: gp.val})
		if err != nil {
			return nil, err
		}
		out[gp.key] = list
	}
	return out, nil
}

// sourceAddress accepts "client", a comma-separated string of CIDRs, or a
// list of CIDRs, and returns the canonical comma-separated form.
func (d *decoder) sourceAddress(tier string, kv pair) (string, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return "", err
	}
	var parts []string
	if v.Kind == yaml.ScalarNode {
		parts = strings.Split(v.Value, ",")
	} else if parts, err = d.strings(tier, kv.key, kv); err != nil {
		return "", err
	}
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return strings.Join(parts, ","), nil
}

// closest returns the known key within two edits of s, for "did you mean".
func closest(s string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(s, k, bestDist); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, or limit when it is
// at least limit (so long hostile keys cost little).
func editDistance(a, b string, limit int) int {
	if len(a)-len(b) >= limit || len(b)-len(a) >= limit {
		return limit
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], limit)
}
