package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sshward/sshward/ca/api"
)

// Oversight (issue 13): who may end live sessions, and the tiers'
// suspicious-activity rules.
//
//	terminate_groups: [auditors]     # top level; default [auditors]
//	tiers:
//	  production:
//	    flags:                         # default api.DefaultFlagRules; [] for none
//	      - {name: no-curl-sh, on: [exec, input], match: 'curl[^|]*\|\s*sh', action: deny,
//	         message: "piping downloads into a shell is not allowed here"}
//	      - {name: big-download, on: [bytes_out], over: 100MB, action: flag}

// DefaultTerminateGroups may end live sessions when the policy does not say.
var DefaultTerminateGroups = []string{"auditors"}

var flagRuleKeys = []string{"name", "on", "match", "over", "action", "message"}

func init() {
	topKeys = append(topKeys, "terminate_groups")
	tierKeys = append(tierKeys, "flags")
}

// MayTerminate reports whether a member of groups may end live sessions.
func (p *Policy) MayTerminate(groups []string) bool {
	allowed := DefaultTerminateGroups
	if p != nil && p.TerminateGroups != nil {
		allowed = p.TerminateGroups
	}
	for _, g := range groups {
		if slices.Contains(allowed, g) {
			return true
		}
	}
	return false
}

// FlagRules returns the rules of tier (the defaults when its policy has no
// flags: key; none for an unknown tier).
func (p *Policy) FlagRules(tier string) []api.FlagRule {
	t, ok := p.Tier(tier)
	if !ok {
		return nil
	}
	if t.Flags == nil {
		return api.DefaultFlagRules()
	}
	return t.Flags
}

func (d *decoder) oversightTopKey(kv pair, p *Policy) error {
	if kv.key != "terminate_groups" {
		return nil
	}
	gs, err := d.strings("", kv.key, kv)
	if err != nil {
		return err
	}
	p.TerminateGroups = append([]string{}, gs...)
	return nil
}

func (d *decoder) flagRules(tier string, kv pair) ([]api.FlagRule, error) {
	v, err := d.node(kv.val)
	if err != nil {
		return nil, err
	}
	if v.Kind != yaml.SequenceNode {
		return nil, &ParseError{Line: v.Line, Tier: tier, Field: "flags", Reason: "flags must be a list of rules such as [{name: x, on: [exec], match: 'rm -rf', action: flag}], not " + kindName(v)}
	}
	out := []api.FlagRule{}
	if len(v.Content) > api.MaxFlagRules {
		return nil, &ParseError{Line: v.Line, Tier: tier, Field: "flags", Reason: fmt.Sprintf("at most %d flag rules per tier", api.MaxFlagRules)}
	}
	for _, c := range v.Content {
		c, err := d.node(c)
		if err != nil {
			return nil, err
		}
		if c.Kind != yaml.MappingNode {
			return nil, &ParseError{Line: c.Line, Tier: tier, Field: "flags", Reason: "each flag rule must be a mapping with name, on, match or over, action"}
		}
		ps, err := d.pairs(c, tier, dupKey)
		if err != nil {
			return nil, err
		}
		var r api.FlagRule
		for _, p := range ps {
			if !slices.Contains(flagRuleKeys, p.key) {
				return nil, unknownKey(tier, p, flagRuleKeys)
			}
			switch p.key {
			case "name":
				err = d.str(tier, p, &r.Name)
			case "match":
				err = d.str(tier, p, &r.Match)
			case "action":
				err = d.str(tier, p, &r.Action)
			case "message":
				err = d.str(tier, p, &r.Message)
			case "on":
				if pv, _ := d.node(p.val); pv != nil && pv.Kind == yaml.ScalarNode {
					var s string
					err = d.str(tier, p, &s)
					r.On = []string{s}
				} else {
					r.On, err = d.strings(tier, "on", p)
				}
			case "over":
				var s string
				if err = d.str(tier, p, &s); err == nil {
					r.OverBytes, err = parseSize(s)
					if err != nil {
						err = &ParseError{Line: p.val.Line, Tier: tier, Field: "flags", Reason: err.Error()}
					}
				}
			}
			if err != nil {
				return nil, err
			}
		}
		if err := r.Check(); err != nil {
			return nil, &ParseError{Line: c.Line, Tier: tier, Field: "flags", Reason: err.Error()}
		}
		out = append(out, r)
	}
	return out, nil
}

// parseSize reads a byte count: 1048576, 512KB, 50MB, 2GB (powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("over must be a size such as 50MB, not %q", s)
	}
	return n * mult, nil
}

// oversightNode writes terminate_groups when the policy sets it (Marshal).
func (p *Policy) oversightNode(root *yaml.Node) {
	if p.TerminateGroups != nil {
		put(root, "terminate_groups", listNode(p.TerminateGroups))
	}
}

// flagsNode writes the tier's flags when its policy sets them (Marshal).
func (t *Tier) flagsNode(n *yaml.Node) {
	if t.Flags == nil {
		return
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	for _, r := range t.Flags {
		m := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
		put(m, "name", stringNode(r.Name))
		put(m, "on", listNode(r.On))
		putString(m, "match", r.Match)
		if r.OverBytes > 0 {
			put(m, "over", stringNode(strconv.FormatInt(r.OverBytes, 10)))
		}
		put(m, "action", stringNode(r.Action))
		putString(m, "message", r.Message)
		seq.Content = append(seq.Content, m)
	}
	if len(seq.Content) == 0 {
		seq.Style = yaml.FlowStyle
	}
	put(n, "flags", seq)
}
