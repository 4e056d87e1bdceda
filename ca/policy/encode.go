package policy

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Marshal writes p as a policy file that Parse reads back to an equal Policy
// (for `sshward-ca policy show` and tests). Comments are not kept; every
// setting is written out, empty lists and strings are left out.
func (p *Policy) Marshal() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	put(root, "session_ttl", durationNode(p.SessionTTL))
	put(root, "host_cert_ttl", durationNode(p.HostCertTTL))
	p.oversightNode(root) // oversight.go
	tiers := &yaml.Node{Kind: yaml.MappingNode}
	for _, t := range p.Tiers {
		if t != nil {
			put(tiers, t.Name, t.node())
		}
	}
	put(root, "tiers", tiers)
	p.workloadNode(root) // workload.go

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("policy: marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("policy: marshal: %w", err)
	}
	return buf.Bytes(), nil
}

func (t *Tier) node() *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	putList(n, "hosts", t.Hosts)
	put(n, "ttl", durationNode(t.TTL))
	put(n, "max_ttl", durationNode(t.MaxTTL))
	put(n, "mfa", boolNode(t.MFA))
	put(n, "approvals", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(t.Approvals)})
	putList(n, "approvers", t.Approvers)
	put(n, "record_input", boolNode(t.RecordInput))
	put(n, "single_use", boolNode(t.SingleUse))
	putList(n, "extensions", t.Extensions)
	principals := &yaml.Node{Kind: yaml.MappingNode}
	for _, g := range t.Groups() {
		put(principals, g, listNode(t.Principals[g]))
	}
	put(n, "principals", principals)
	putString(n, "source_address", t.SourceAddress)
	putString(n, "force_command", t.ForceCommand)
	putString(n, "on_recording_failure", t.OnRecordingFailure)
	put(n, "end_session_on_expiry", boolNode(t.EndSessionOnExpiry))
	put(n, "request_ttl", durationNode(t.RequestTTL))
	putList(n, "trusted_on", t.TrustedOn)
	if t.RevocationMaxStale == 0 {
		put(n, "revocation_max_stale", stringNode("off"))
	} else {
		put(n, "revocation_max_stale", durationNode(t.RevocationMaxStale))
	}
	t.onCallNodes(n)
	t.bulkOutputNode(n)
	t.approvalRulesNode(n)
	t.flagsNode(n) // oversight.go
	return n
}

func put(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, stringNode(key), v)
}

func putList(m *yaml.Node, key string, list []string) {
	if len(list) > 0 {
		put(m, key, listNode(list))
	}
}

func putString(m *yaml.Node, key, s string) {
	if s != "" {
		put(m, key, stringNode(s))
	}
}

// stringNode is tagged !!str so the encoder quotes values such as "true" or
// "*.prod" that would otherwise read back as something else. yaml.v3 does not
// quote "<<" by itself, which would read back as a merge key.
func stringNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if s == "<<" {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

func listNode(list []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range list {
		n.Content = append(n.Content, stringNode(s))
	}
	return n
}

func boolNode(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

func durationNode(d time.Duration) *yaml.Node {
	return stringNode(FormatDuration(d))
}
