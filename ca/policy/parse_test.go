package policy

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// minimal is a valid one-tier policy; cases below vary it line by line.
const minimal = `tiers:
  staging:
    ttl: 15m
    principals:
      engineers: ["{{user}}"]
`

func TestDefault(t *testing.T) {
	p, err := Parse(Default())
	if err != nil {
		t.Fatalf("Parse(Default()): %v", err)
	}
	prodHosts := []string{"*.prod", "*.production.example.com"}
	want := &Policy{
		SessionTTL:  12 * time.Hour,
		HostCertTTL: 24 * time.Hour,
		Tiers: []*Tier{
			{
				Name:               "staging",
				Hosts:              []string{"*.staging", "*.staging.example.com"},
				TTL:                60 * time.Minute,
				MaxTTL:             2 * time.Hour,
				Extensions:         []string{"permit-pty", "permit-port-forwarding", "permit-agent-forwarding"},
				Principals:         map[string][]string{"engineers": {"deploy", "{{user}}"}},
				OnRecordingFailure: "open",
				RequestTTL:         30 * time.Minute,
			},
			{
				Name:               "production",
				Hosts:              prodHosts,
				TTL:                15 * time.Minute,
				MaxTTL:             30 * time.Minute,
				MFA:                true,
				RecordInput:        true,
				Extensions:         []string{"permit-pty"},
				Principals:         map[string][]string{"sre": {"{{user}}"}},
				SourceAddress:      "client",
				OnRecordingFailure: "closed",
				EndSessionOnExpiry: true,
				RequestTTL:         30 * time.Minute,
				RevocationMaxStale: 5 * time.Minute,
			},
			{
				Name:               "break-glass",
				Hosts:              prodHosts,
				TTL:                10 * time.Minute,
				MaxTTL:             10 * time.Minute,
				MFA:                true,
				Approvals:          2,
				Approvers:          []string{"incident-commanders"},
				RecordInput:        true,
				SingleUse:          true,
				Extensions:         []string{"permit-pty"},
				Principals:         map[string][]string{"oncall": {"root"}},
				OnRecordingFailure: "closed",
				EndSessionOnExpiry: true,
				RequestTTL:         30 * time.Minute,
				TrustedOn:          []string{"production"},
				RevocationMaxStale: 5 * time.Minute,
			},
		},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("default policy:\n got %s\nwant %s", dump(t, p), dump(t, want))
	}
	if names := p.TierNames(); !reflect.DeepEqual(names, []string{"staging", "production", "break-glass"}) {
		t.Errorf("TierNames = %v", names)
	}
	for _, g := range []string{"engineers", "sre", "oncall", "incident-commanders", "auditors"} {
		if !bytes.Contains(Default(), []byte(g)) {
			t.Errorf("default policy does not mention group %s", g)
		}
	}
	if !bytes.Contains(Default(), []byte("\n# ")) {
		t.Error("default policy has no comments")
	}
	d := Default()
	d[0] = 'X'
	if Default()[0] == 'X' {
		t.Error("Default returns shared bytes")
	}
}

func dump(t *testing.T, p *Policy) string {
	t.Helper()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseDefaults(t *testing.T) {
	p, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	tier, ok := p.Tier("staging")
	if !ok {
		t.Fatal("tier staging missing")
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"session_ttl", p.SessionTTL, DefaultSessionTTL},
		{"host_cert_ttl", p.HostCertTTL, DefaultHostCertTTL},
		{"max_ttl defaults to ttl", tier.MaxTTL, 15 * time.Minute},
		{"request_ttl", tier.RequestTTL, DefaultRequestTTL},
		{"on_recording_failure is closed (secure default)", tier.OnRecordingFailure, "closed"},
		{"no extensions", len(tier.Extensions), 0},
		{"no source address", tier.SourceAddress, ""},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
	if _, ok := p.Tier("production"); ok {
		t.Error("Tier(production) found in a one-tier policy")
	}
}

func TestParseFeatures(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, p *Policy)
	}{
		{
			name: "empty values mean absent",
			yaml: "session_ttl:\ntiers:\n  s:\n    ttl: 5m\n    max_ttl:\n    hosts:\n    principals: {g: [x]}\n",
			check: func(t *testing.T, p *Policy) {
				s := p.Tiers[0]
				if p.SessionTTL != DefaultSessionTTL || s.MaxTTL != 5*time.Minute || s.Hosts != nil {
					t.Errorf("got session_ttl %v max_ttl %v hosts %v", p.SessionTTL, s.MaxTTL, s.Hosts)
				}
			},
		},
		{
			name: "source_address as comma string is normalised",
			yaml: "tiers:\n  s:\n    ttl: 5m\n    principals: {g: [x]}\n    source_address: \"10.0.0.0/8, 192.0.2.1 ,2001:db8::/32\"\n",
			check: func(t *testing.T, p *Policy) {
				if got := p.Tiers[0].SourceAddress; got != "10.0.0.0/8,192.0.2.1,2001:db8::/32" {
					t.Errorf("source_address = %q", got)
				}
			},
		},
		{
			name: "source_address as list",
			yaml: "tiers:\n  s:\n    ttl: 5m\n    principals: {g: [x]}\n    source_address: [10.0.0.0/8, 192.0.2.0/24]\n",
			check: func(t *testing.T, p *Policy) {
				if got := p.Tiers[0].SourceAddress; got != "10.0.0.0/8,192.0.2.0/24" {
					t.Errorf("source_address = %q", got)
				}
			},
		},
		{
			name: "anchors, aliases and merge keys; explicit keys win",
			yaml: `tiers:
  production: &prod
    hosts: &prodhosts ["*.prod"]
    ttl: 15m
    max_ttl: 30m
    mfa: true
    principals: {sre: ["{{user}}"]}
  break-glass:
    <<: *prod
    ttl: 10m
    max_ttl: 10m
    principals: {oncall: [root]}
  audit:
    hosts: *prodhosts
    ttl: 5m
    principals: {auditors: [auditor]}
`,
			check: func(t *testing.T, p *Policy) {
				bg, _ := p.Tier("break-glass")
				if bg.TTL != 10*time.Minute || bg.MaxTTL != 10*time.Minute || !bg.MFA ||
					!reflect.DeepEqual(bg.Hosts, []string{"*.prod"}) ||
					!reflect.DeepEqual(bg.Principals, map[string][]string{"oncall": {"root"}}) {
					t.Errorf("break-glass = %+v", bg)
				}
				au, _ := p.Tier("audit")
				if !reflect.DeepEqual(au.Hosts, []string{"*.prod"}) {
					t.Errorf("audit hosts = %v", au.Hosts)
				}
				if got := p.TierNames(); !reflect.DeepEqual(got, []string{"production", "break-glass", "audit"}) {
					t.Errorf("tier order = %v", got)
				}
			},
		},
		{
			name: "trailing empty document is fine",
			yaml: minimal + "---\n",
			check: func(t *testing.T, p *Policy) {
				if len(p.Tiers) != 1 {
					t.Errorf("tiers = %d", len(p.Tiers))
				}
			},
		},
		{
			name: "principal templates with literal parts",
			yaml: "tiers:\n  s:\n    ttl: 1m\n    principals: {g: [\"{{user}}-admin\", \"_svc\", \"Deploy.1\"]}\n",
			check: func(t *testing.T, p *Policy) {
				if got := p.Tiers[0].PrincipalsFor(Identity{User: "bob", Groups: []string{"g"}}); !reflect.DeepEqual(got, []string{"Deploy.1", "_svc", "bob-admin"}) {
					t.Errorf("principals = %v", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, p)
		})
	}
}

func TestParseErrors(t *testing.T) {
	// Each case: the policy, where the error must point, and words the
	// message must hold besides the field name.
	tests := []struct {
		name      string
		yaml      string
		line      int
		tier      string
		field     string
		mustSay   string
		notFields bool // the error is about the YAML, not a field
	}{
		{name: "empty file", yaml: "", field: "tiers", mustSay: "empty"},
		{name: "comments only", yaml: "# nothing\n", field: "tiers", mustSay: "empty"},
		{name: "null document", yaml: "~\n", field: "tiers", mustSay: "empty"},
		{name: "no tiers key", yaml: "session_ttl: 1h\n", field: "tiers", mustSay: "define at least one tier"},
		{name: "empty tiers", yaml: "session_ttl: 1h\ntiers: {}\n", line: 2, field: "tiers", mustSay: "at least one tier"},
		{name: "tiers not a mapping", yaml: "tiers: [staging]\n", line: 1, field: "tiers", mustSay: "mapping"},
		{name: "top level is a list", yaml: "- tiers\n", line: 1, notFields: true, mustSay: "mapping"},
		{name: "yaml syntax error", yaml: "tiers:\n  staging: [\n", line: 2, notFields: true, mustSay: "invalid YAML"},
		{name: "two documents", yaml: minimal + "---\ntiers: {}\n", line: 7, notFields: true, mustSay: "more than one YAML document"},
		{name: "unknown top-level key", yaml: "sesion_ttl: 1h\n" + minimal, line: 1, field: "sesion_ttl", mustSay: "did you mean session_ttl"},
		{name: "unknown tier key", yaml: minimal + "    tll: 5m\n", line: 6, tier: "staging", field: "tll", mustSay: "did you mean ttl"},
		{name: "unknown key far from any", yaml: minimal + "    colour: blue\n", line: 6, tier: "staging", field: "colour", mustSay: "expected one of"},
		{name: "duplicate top-level key", yaml: "session_ttl: 1h\nsession_ttl: 2h\n" + minimal, line: 2, field: "session_ttl", mustSay: "first at line 1"},
		{name: "duplicate tier key", yaml: minimal + "    ttl: 20m\n", line: 6, tier: "staging", field: "ttl", mustSay: "first at line 3"},
		{name: "duplicate tier", yaml: minimal + "  staging:\n    ttl: 1m\n", line: 6, field: "tiers", mustSay: `defines "staging" twice`},
		{name: "duplicate group", yaml: minimal + "      engineers: [x]\n", line: 6, tier: "staging", field: "principals", mustSay: "engineers"},
		{name: "bad session_ttl", yaml: "session_ttl: forever\n" + minimal, line: 1, field: "session_ttl", mustSay: "not a duration"},
		{name: "host_cert_ttl too short", yaml: "host_cert_ttl: 30s\n" + minimal, line: 1, field: "host_cert_ttl", mustSay: "at least 1m"},
		{name: "session_ttl a list", yaml: "session_ttl: [1h]\n" + minimal, line: 1, field: "session_ttl", mustSay: "not a list"},
		{name: "ttl missing", yaml: "tiers:\n  staging:\n    principals: {engineers: [x]}\n", line: 2, tier: "staging", field: "ttl", mustSay: "required"},
		{name: "ttl without unit", yaml: "tiers:\n  staging:\n    ttl: 15\n    principals: {engineers: [x]}\n", line: 3, tier: "staging", field: "ttl", mustSay: "15m"},
		{name: "ttl not a duration", yaml: "tiers:\n  staging:\n    ttl: 15 minutes\n    principals: {engineers: [x]}\n", line: 3, tier: "staging", field: "ttl", mustSay: "not a duration"},
		{name: "ttl zero", yaml: "tiers:\n  staging:\n    ttl: 0s\n    principals: {engineers: [x]}\n", line: 3, tier: "staging", field: "ttl", mustSay: "too short"},
		{name: "ttl negative", yaml: "tiers:\n  staging:\n    ttl: -5m\n    principals: {engineers: [x]}\n", line: 3, tier: "staging", field: "ttl", mustSay: "too short"},
		{name: "ttl a mapping", yaml: "tiers:\n  staging:\n    ttl: {m: 5}\n    principals: {engineers: [x]}\n", line: 3, tier: "staging", field: "ttl", mustSay: "not a mapping"},
		{name: "max_ttl zero", yaml: minimal + "    max_ttl: 0s\n", line: 6, tier: "staging", field: "max_ttl", mustSay: "too short"},
		{name: "max_ttl shorter than ttl", yaml: "tiers:\n  production:\n    ttl: 15m\n    principals: {sre: [x]}\n    max_ttl: 10m\n", line: 5, tier: "production", field: "max_ttl", mustSay: "max_ttl 10m is shorter than ttl 15m"},
		{name: "request_ttl too long", yaml: minimal + "    request_ttl: 10000h\n", line: 6, tier: "staging", field: "request_ttl", mustSay: "limit"},
		{name: "mfa not a bool", yaml: minimal + "    mfa: yes\n", line: 6, tier: "staging", field: "mfa", mustSay: "true or false"},
		{name: "single_use quoted", yaml: minimal + "    single_use: \"true\"\n", line: 6, tier: "staging", field: "single_use", mustSay: "true or false"},
		{name: "approvals negative", yaml: minimal + "    approvals: -1\n", line: 6, tier: "staging", field: "approvals", mustSay: "0 or more"},
		{name: "approvals not a number", yaml: minimal + "    approvals: two\n", line: 6, tier: "staging", field: "approvals", mustSay: "whole number"},
		{name: "approvals without approvers", yaml: minimal + "    approvals: 2\n", line: 6, tier: "staging", field: "approvers", mustSay: "approvals is 2"},
		{name: "approver with a space", yaml: minimal + "    approvals: 1\n    approvers: [\"incident-commanders \"]\n", line: 7, tier: "staging", field: "approvers", mustSay: "surrounding spaces"},
		{name: "unknown extension", yaml: minimal + "    extensions:\n      - permit-pty\n      - permit-x11-forwarding\n", line: 8, tier: "staging", field: "extensions", mustSay: "permit-X11-forwarding"},
		{name: "duplicate extension", yaml: minimal + "    extensions: [permit-pty, permit-pty]\n", line: 6, tier: "staging", field: "extensions", mustSay: "twice"},
		{name: "extensions not a list", yaml: minimal + "    extensions: permit-pty\n", line: 6, tier: "staging", field: "extensions", mustSay: "list"},
		{name: "extension entry a list", yaml: minimal + "    extensions: [[permit-pty]]\n", line: 6, tier: "staging", field: "extensions", mustSay: "single values"},
		{name: "bad on_recording_failure", yaml: minimal + "    on_recording_failure: maybe\n", line: 6, tier: "staging", field: "on_recording_failure", mustSay: "open or closed"},
		{name: "principals missing", yaml: "tiers:\n  staging:\n    ttl: 15m\n", line: 2, tier: "staging", field: "principals", mustSay: "empty"},
		{name: "principals empty", yaml: "tiers:\n  staging:\n    ttl: 15m\n    principals: {}\n", line: 4, tier: "staging", field: "principals", mustSay: "empty"},
		{name: "principals a list", yaml: "tiers:\n  staging:\n    ttl: 15m\n    principals: [root]\n", line: 4, tier: "staging", field: "principals", mustSay: "map groups"},
		{name: "group with no logins", yaml: "tiers:\n  staging:\n    ttl: 15m\n    principals:\n      sre: []\n", line: 5, tier: "staging", field: "principals", mustSay: `group "sre" is empty`},
		{name: "group with null logins", yaml: "tiers:\n  staging:\n    ttl: 15m\n    principals:\n      sre:\n", line: 5, tier: "staging", field: "principals", mustSay: `group "sre" is empty`},
		{name: "invalid principal literal", yaml: "tiers:\n  staging:\n    ttl: 15m\n    principals:\n      sre:\n        - deploy\n        - -rf\n", line: 7, tier: "staging", field: "principals", mustSay: `"-rf" is not a unix login name`},
		{name: "principal with a space", yaml: "tiers:\n  staging:\n    ttl: 15m\n    principals: {sre: [\"root user\"]}\n", line: 4, tier: "staging", field: "principals", mustSay: "unix login name"},
		{name: "unknown placeholder", yaml: "tiers:\n  staging:\n    ttl: 15m\n    principals:\n      sre: [\"{{username}}\"]\n", line: 5, tier: "staging", field: "principals", mustSay: "unknown placeholder"},
		{name: "template never valid", yaml: "tiers:\n  staging:\n    ttl: 15m\n    principals:\n      sre: [\"{{user}}@corp\"]\n", line: 5, tier: "staging", field: "principals", mustSay: "can never expand"},
		{name: "duplicate principal", yaml: "tiers:\n  staging:\n    ttl: 15m\n    principals:\n      sre: [a, b, a]\n", line: 5, tier: "staging", field: "principals", mustSay: "twice"},
		{name: "tier name upper case", yaml: "tiers:\n  Prod:\n    ttl: 15m\n    principals: {sre: [x]}\n", line: 2, tier: "Prod", field: "name", mustSay: "lower-case"},
		{name: "tier name underscore", yaml: "tiers:\n  break_glass:\n    ttl: 15m\n    principals: {sre: [x]}\n", line: 2, tier: "break_glass", field: "name", mustSay: "lower-case"},
		{name: "tier name leading dash", yaml: "tiers:\n  -x:\n    ttl: 15m\n    principals: {sre: [x]}\n", line: 2, tier: "-x", field: "name", mustSay: "starting with"},
		{name: "tier settings a value", yaml: "tiers:\n  staging: 5\n", line: 2, tier: "staging", notFields: true, mustSay: "mapping"},
		{name: "source_address bad CIDR", yaml: minimal + "    source_address: 10.0.0.0/33\n", line: 6, tier: "staging", field: "source_address", mustSay: "not a CIDR"},
		{name: "source_address host bits", yaml: minimal + "    source_address: 10.0.0.1/8\n", line: 6, tier: "staging", field: "source_address", mustSay: "write 10.0.0.0/8"},
		{name: "source_address client and CIDR", yaml: minimal + "    source_address: client,10.0.0.0/8\n", line: 6, tier: "staging", field: "source_address", mustSay: "not both"},
		{name: "source_address list element", yaml: minimal + "    source_address:\n      - 10.0.0.0/8\n      - somewhere\n", line: 8, tier: "staging", field: "source_address", mustSay: `"somewhere"`},
		{name: "source_address empty entry", yaml: minimal + "    source_address: \"10.0.0.0/8,\"\n", line: 6, tier: "staging", field: "source_address", mustSay: `""`},
		{name: "empty host pattern", yaml: minimal + "    hosts:\n      - \"*.staging\"\n      - \"\"\n", line: 8, tier: "staging", field: "hosts", mustSay: "empty pattern"},
		{name: "null host pattern", yaml: minimal + "    hosts: [\"*.staging\", ~]\n", line: 6, tier: "staging", field: "hosts", mustSay: "empty pattern"},
		{name: "host pattern with a comma", yaml: minimal + "    hosts: [\"a,b\"]\n", line: 6, tier: "staging", field: "hosts", mustSay: "commas"},
		{name: "host pattern with a newline", yaml: minimal + "    hosts: [\"a\\nMatch all\"]\n", line: 6, tier: "staging", field: "hosts", mustSay: "whitespace"},
		{name: "duplicate host pattern", yaml: minimal + "    hosts: [a, a]\n", line: 6, tier: "staging", field: "hosts", mustSay: "twice"},
		{name: "non-scalar key", yaml: minimal + "    [a]: 1\n", line: 6, tier: "staging", notFields: true, mustSay: "plain name"},
		{name: "merge of a value", yaml: "tiers:\n  staging:\n    <<: 5\n    ttl: 5m\n    principals: {g: [x]}\n", line: 3, tier: "staging", notFields: true, mustSay: "<< must merge"},
		{name: "unknown key arriving by merge", yaml: "tiers:\n  a: &a {ttl: 5m, principals: {g: [x]}, bogus: 1}\n  b: {<<: *a}\n", line: 2, tier: "a", field: "bogus", mustSay: "unknown key"},
		{name: "alias bomb", yaml: aliasBomb(), notFields: true, mustSay: "anchors and aliases"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded (%d tiers), want an error", len(p.Tiers))
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a *ParseError", err, err)
			}
			msg := err.Error()
			if pe.Line != tt.line {
				t.Errorf("line %d, want %d (%s)", pe.Line, tt.line, msg)
			}
			if pe.Tier != tt.tier {
				t.Errorf("tier %q, want %q (%s)", pe.Tier, tt.tier, msg)
			}
			if !tt.notFields {
				if pe.Field != tt.field {
					t.Errorf("field %q, want %q (%s)", pe.Field, tt.field, msg)
				}
				if tt.field != "name" && !strings.Contains(pe.Reason, tt.field) {
					t.Errorf("reason %q does not name the field %s", pe.Reason, tt.field)
				}
			}
			if !strings.Contains(msg, tt.mustSay) {
				t.Errorf("message %q does not say %q", msg, tt.mustSay)
			}
			wantPrefix := "policy: "
			if tt.line > 0 {
				wantPrefix = "policy line " + strconv.Itoa(tt.line) + ": "
			}
			if tt.tier != "" {
				wantPrefix += `tier "` + tt.tier + `": `
			}
			if !strings.HasPrefix(msg, wantPrefix) {
				t.Errorf("message %q does not start with %q", msg, wantPrefix)
			}
		})
	}
}

// aliasBomb is a short, schema-valid file whose merge keys expand to 10^9
// mappings.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("tiers:\n  t0:\n    ttl: 5m\n    principals: &m0 {g: [x]}\n")
	for i := 1; i <= 9; i++ {
		prev := "*m" + strconv.Itoa(i-1)
		fmt.Fprintf(&b, "  t%d:\n    ttl: 5m\n    principals: &m%d {<<: [%s]}\n", i, i, strings.Repeat(prev+", ", 9)+prev)
	}
	return b.String()
}

func TestParseTooLarge(t *testing.T) {
	big := minimal + "#" + strings.Repeat("x", MaxPolicyBytes) + "\n"
	_, err := Parse([]byte(big))
	var pe *ParseError
	if !errors.As(err, &pe) || !strings.Contains(pe.Reason, "limit") {
		t.Fatalf("err = %v, want a size ParseError", err)
	}
}

func TestParseErrorFormat(t *testing.T) {
	err := &ParseError{Line: 14, Tier: "production", Field: "max_ttl", Reason: "max_ttl 10m is shorter than ttl 15m"}
	want := `policy line 14: tier "production": max_ttl 10m is shorter than ttl 15m`
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err.Error(), want)
	}
}

func TestCheck(t *testing.T) {
	valid := func() *Policy {
		return &Policy{SessionTTL: time.Hour, HostCertTTL: time.Hour, Tiers: []*Tier{{
			Name: "t", TTL: time.Minute, MaxTTL: time.Minute, RequestTTL: time.Minute,
			Principals: map[string][]string{"g": {"x"}}, OnRecordingFailure: "open",
		}}}
	}
	tests := []struct {
		name   string
		mutate func(p *Policy)
		field  string // "" = valid
	}{
		{name: "valid", mutate: func(*Policy) {}},
		{name: "zero session_ttl", mutate: func(p *Policy) { p.SessionTTL = 0 }, field: "session_ttl"},
		{name: "no tiers", mutate: func(p *Policy) { p.Tiers = nil }, field: "tiers"},
		{name: "nil tier", mutate: func(p *Policy) { p.Tiers = append(p.Tiers, nil) }, field: "tiers"},
		{name: "duplicate names", mutate: func(p *Policy) { c := *p.Tiers[0]; p.Tiers = append(p.Tiers, &c) }, field: "name"},
		{name: "zero request_ttl", mutate: func(p *Policy) { p.Tiers[0].RequestTTL = 0 }, field: "request_ttl"},
		{name: "empty on_recording_failure", mutate: func(p *Policy) { p.Tiers[0].OnRecordingFailure = "" }, field: "on_recording_failure"},
		{name: "source address with spaces", mutate: func(p *Policy) { p.Tiers[0].SourceAddress = "10.0.0.0/8, 10.1.0.0/16" }, field: "source_address"},
		{name: "source address zone", mutate: func(p *Policy) { p.Tiers[0].SourceAddress = "fe80::1%eth0" }, field: "source_address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			tt.mutate(p)
			err := p.Check()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Check = %v, want a *ParseError", err)
			}
			if pe.Field != tt.field || pe.Line != 0 {
				t.Errorf("field %q line %d, want %q line 0 (%v)", pe.Field, pe.Line, tt.field, err)
			}
		})
	}
	var nilPolicy *Policy
	if nilPolicy.Check() == nil {
		t.Error("nil policy passes Check")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	tricky := `session_ttl: 90s
host_cert_ttl: 1h30m
tiers:
  odd:
    hosts: ["*", "!bastion.prod", "10.0.0.?"]
    ttl: 1m
    max_ttl: 8760h
    approvals: 1
    approvers: ["<<", "true", "*x", "{a}"]
    extensions: [permit-X11-forwarding, permit-user-rc]
    principals:
      "<<": ["{{user}}"]
      "true": ["null", "yes"]
      "a: b": ["{{user}}.{{user}}"]
    source_address: [192.0.2.1, "2001:db8::/32"]
    force_command: "echo 'hi' # not a comment\n  second line: {x}"
    on_recording_failure: open
    end_session_on_expiry: true
    request_ttl: 2h
`
	for name, src := range map[string][]byte{"default": Default(), "tricky": []byte(tricky)} {
		t.Run(name, func(t *testing.T) {
			p, err := Parse(src)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			out, err := p.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			q, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
			}
			if !reflect.DeepEqual(p, q) {
				t.Errorf("round trip changed the policy:\n%s\nvs\n%s", out, dump(t, q))
			}
		})
	}
}
