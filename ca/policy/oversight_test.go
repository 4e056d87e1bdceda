package policy

import (
	"reflect"
	"strings"
	"testing"

	"github.com/sshward/sshward/ca/api"
)

const oversightBase = `
tiers:
  production:
    ttl: 15m
    principals: {sre: ["{{user}}"]}
`

// TestOversightKeys: terminate_groups and per-tier flags parse, default
// when absent, and bad rules are refused with their line.
func TestOversightKeys(t *testing.T) {
	p, err := Parse([]byte(oversightBase))
	if err != nil {
		t.Fatal(err)
	}
	if !p.MayTerminate([]string{"sre", "auditors"}) || p.MayTerminate([]string{"sre"}) {
		t.Errorf("default terminate_groups is not [auditors]")
	}
	if got := p.FlagRules("production"); len(got) != len(api.DefaultFlagRules()) {
		t.Errorf("a tier without flags: has %d rules, want the defaults", len(got))
	}
	p, err = Parse([]byte("terminate_groups: [security]\n" + oversightBase + `    flags:
      - {name: no-sh, on: exec, match: 'curl.*\|\s*sh', action: deny, message: "no"}
      - {name: big, on: [bytes_out], over: 100MB, action: flag}
`))
	if err != nil {
		t.Fatal(err)
	}
	if !p.MayTerminate([]string{"security"}) || p.MayTerminate([]string{"auditors"}) {
		t.Errorf("terminate_groups not applied: %v", p.TerminateGroups)
	}
	rs := p.FlagRules("production")
	if len(rs) != 2 || rs[0].Action != "deny" || rs[0].On[0] != "exec" || rs[1].OverBytes != 100<<20 {
		t.Fatalf("rules %+v", rs)
	}
	p, err = Parse([]byte(oversightBase + "    flags: []\n"))
	if err != nil || len(p.FlagRules("production")) != 0 {
		t.Fatalf("flags: [] should turn the defaults off: %v %v", err, p)
	}
	for _, tc := range []struct{ name, rules, want string }{
		{"bad regexp", "      - {name: x, on: [exec], match: '(', action: flag}\n", "not a valid regular expression"},
		{"unknown on", "      - {name: x, on: [stdin], match: 'a', action: flag}\n", "unknown on"},
		{"bad action", "      - {name: x, on: [exec], match: 'a', action: block}\n", "action must be flag or deny"},
		{"bytes without over", "      - {name: x, on: [bytes_out], action: flag}\n", "needs over"},
		{"bad size", "      - {name: x, on: [bytes_out], over: lots, action: flag}\n", "size such as 50MB"},
		{"unknown key", "      - {name: x, on: [exec], match: 'a', action: flag, when: always}\n", "unknown key"},
	} {
		_, err := Parse([]byte(oversightBase + "    flags:\n" + tc.rules))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "line 7") {
			t.Errorf("%s: %v, want %q at line 7", tc.name, err, tc.want)
		}
	}
}

// TestOversightRoundTrip: Marshal writes the oversight keys so that Parse
// reads back an equal policy (sshward-ca policy show).
func TestOversightRoundTrip(t *testing.T) {
	for _, src := range []string{
		"terminate_groups: [security, auditors]\n" + oversightBase + "    flags:\n      - {name: a, on: exec, match: 'rm\\s', action: deny, message: \"no: really\"}\n      - {name: b, on: [bytes_out], over: 2MB, action: flag}\n",
		"terminate_groups: []\n" + oversightBase + "    flags: []\n",
		oversightBase,
	} {
		p, err := Parse([]byte(src))
		if err != nil {
			t.Fatalf("%v\n%s", err, src)
		}
		out, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		q, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the policy:\n%s", out)
		}
	}
}
