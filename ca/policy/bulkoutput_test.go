package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/sshward/sshward/ca/api"
)

// TestBulkOutput: both spellings parse, a cap reaches the certificate as
// bulk-output@sshward and survives Marshal; every malformed value is
// refused with its line and the fix, never read as "keep all" or a cap
// nobody wrote.
func TestBulkOutput(t *testing.T) {
	base := "tiers:\n  prod:\n    ttl: 15m\n    principals: {sre: [root]}\n"
	for _, tc := range []struct {
		name, setting string
		wantMiB       int
		wantErr       string
	}{
		{"absent keeps all", "", 0, ""},
		{"keep all", "    bulk_output: {keep: all}\n", 0, ""},
		{"keep 64 MiB", "    bulk_output: {keep_mib: 64}\n", 64, ""},
		{"block style", "    bulk_output:\n      keep_mib: 1\n", 1, ""},
		{"zero", "    bulk_output: {keep_mib: 0}\n", 0, "keep_mib \"0\" must be a whole number of MiB"},
		{"negative", "    bulk_output: {keep_mib: -5}\n", 0, "must be a whole number of MiB"},
		{"not a number", "    bulk_output: {keep_mib: lots}\n", 0, "must be a whole number of MiB"},
		{"a string number", "    bulk_output: {keep_mib: \"64\"}\n", 0, "must be a whole number of MiB"},
		{"too large", "    bulk_output: {keep_mib: 99999999}\n", 0, "from 1 to"},
		{"keep something else", "    bulk_output: {keep: some}\n", 0, "keep \"some\" is not all"},
		{"both", "    bulk_output: {keep: all, keep_mib: 3}\n", 0, "exactly one of keep or keep_mib"},
		{"a bare value", "    bulk_output: 64\n", 0, "must be a mapping"},
		{"unknown key", "    bulk_output: {keep_gib: 1}\n", 0, "unknown bulk_output key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(base + tc.setting))
			if tc.wantErr != "" {
				var pe *ParseError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.wantErr) || pe.Line != 5 || pe.Field != "bulk_output" ||
					!strings.Contains(err.Error(), "bulk_output: {keep_mib: 64}") {
					t.Fatalf("Parse: %v, want a refusal at line 5 saying %q and the fix", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tier, _ := p.Tier("prod")
			if tier.BulkKeepMiB != tc.wantMiB {
				t.Fatalf("BulkKeepMiB %d, want %d", tier.BulkKeepMiB, tc.wantMiB)
			}
			g, err := p.Grant(Request{Identity: Identity{User: "bob", Groups: []string{"sre"}, MFA: true}, Tier: "prod"})
			if err != nil {
				t.Fatal(err)
			}
			v, has := g.Extensions[api.ExtBulkOutput]
			keep, ok := api.ParseBulkOutput(v)
			if has != (tc.wantMiB > 0) || (has && (!ok || keep != int64(tc.wantMiB)<<20)) {
				t.Fatalf("extension %q (present %v), want a cap of %d MiB", v, has, tc.wantMiB)
			}
			data, err := p.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(data)
			if err != nil {
				t.Fatalf("Marshal output does not parse: %v\n%s", err, data)
			}
			if bt, _ := back.Tier("prod"); bt.BulkKeepMiB != tc.wantMiB {
				t.Fatalf("after Marshal: %d MiB\n%s", bt.BulkKeepMiB, data)
			}
		})
	}
}

// TestParseBulkOutputExtension: the agent reads only what the CA writes;
// anything else keeps all output (never a smaller cap than signed).
func TestParseBulkOutputExtension(t *testing.T) {
	for v, want := range map[string]int64{"all": 0, "keep-mib=1": 1 << 20, "keep-mib=64": 64 << 20} {
		if got, ok := api.ParseBulkOutput(v); !ok || got != want {
			t.Errorf("%q: %d %v, want %d", v, got, ok, want)
		}
	}
	for _, v := range []string{"", "keep-mib=0", "keep-mib=-1", "keep-mib=+1", "keep-mib=", "keep-mib=1x", "keep-mib=99999999", "ALL", "keep-mib=1 "} {
		if got, ok := api.ParseBulkOutput(v); ok {
			t.Errorf("%q accepted as %d", v, got)
		}
	}
}
