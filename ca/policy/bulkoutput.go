package policy

import (
	"fmt"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/sshward/sshward/ca/api"
)

// bulk_output: how much of a session's binary output the recording keeps
// in its side blob (recorder blob.go):
//
//	bulk_output: {keep: all}       # every byte (the default)
//	bulk_output: {keep_mib: 64}    # the first 64 MiB, and length and sha256 of all of it
//
// Certificates carry it as api.ExtBulkOutput; the agent applies it.

func init() { tierKeys = append(tierKeys, "bulk_output") }

// bulkOutput parses the bulk_output mapping into t.BulkKeepMiB.
func (d *decoder) bulkOutput(tier string, kv pair, t *Tier) error {
	v, err := d.node(kv.val)
	if err != nil {
		return err
	}
	bad := func(line int, why string) error {
		return &ParseError{Line: line, Tier: tier, Field: "bulk_output", Reason: why +
			": write bulk_output: {keep: all} or bulk_output: {keep_mib: 64}"}
	}
	if v.Kind != yaml.MappingNode {
		return bad(v.Line, fmt.Sprintf("bulk_output must be a mapping, not %s", kindName(v)))
	}
	ps, err := d.pairs(v, tier, dupKey)
	if err != nil {
		return err
	}
	if len(ps) != 1 {
		return bad(v.Line, "bulk_output takes exactly one of keep or keep_mib")
	}
	p := ps[0]
	val, err := d.node(p.val)
	if err != nil {
		return err
	}
	if val.Kind != yaml.ScalarNode {
		return bad(val.Line, fmt.Sprintf("bulk_output %s must be a single value, not %s", p.key, kindName(val)))
	}
	switch p.key {
	case "keep":
		if val.Value != "all" {
			return bad(val.Line, fmt.Sprintf("bulk_output keep %q is not all", val.Value))
		}
		t.BulkKeepMiB = 0
	case "keep_mib":
		n, err := strconv.Atoi(val.Value)
		if val.ShortTag() != "!!int" || err != nil || n < 1 || n > api.MaxBulkKeepMiB {
			return bad(val.Line, fmt.Sprintf("bulk_output keep_mib %q must be a whole number of MiB from 1 to %d", val.Value, api.MaxBulkKeepMiB))
		}
		t.BulkKeepMiB = n
	default:
		return bad(p.keyNode.Line, fmt.Sprintf("unknown bulk_output key %q", p.key))
	}
	return nil
}

// bulkOutputNode adds bulk_output to an encoded tier when it caps.
func (t *Tier) bulkOutputNode(n *yaml.Node) {
	if t.BulkKeepMiB > 0 {
		m := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
		put(m, "keep_mib", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(t.BulkKeepMiB)})
		put(n, "bulk_output", m)
	}
}

// bulkOutputGrant puts the cap into the certificate's extensions; without
// one the extension is left out (the agent keeps everything).
func (t *Tier) bulkOutputGrant(ext map[string]string) {
	if t.BulkKeepMiB > 0 {
		ext[api.ExtBulkOutput] = api.BulkOutputValue(t.BulkKeepMiB)
	}
}
