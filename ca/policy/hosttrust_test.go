package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestHostTrust(t *testing.T) {
	p, err := Parse(Default())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tier string
		want []string
	}{
		{"staging", []string{"staging"}},
		{"production", []string{"production", "break-glass"}},
		{"break-glass", []string{"break-glass"}},
	}
	for _, tc := range tests {
		t.Run(tc.tier, func(t *testing.T) {
			if got := p.HostTrust(tc.tier); !slices.Equal(got, tc.want) {
				t.Fatalf("HostTrust(%s) = %v, want %v", tc.tier, got, tc.want)
			}
		})
	}
}

func TestTrustedOnErrors(t *testing.T) {
	base := "tiers:\n  a:\n    ttl: 5m\n    principals: {g: [x]}\n    trusted_on: [%s]\n"
	for _, tc := range []struct{ on, want string }{
		{"a", "names the tier itself"},
		{"nope", `unknown tier "nope"`},
	} {
		_, err := Parse([]byte(strings.Replace(base, "%s", tc.on, 1)))
		var pe *ParseError
		if err == nil || !asParseError(err, &pe) || pe.Field != "trusted_on" || pe.Line != 5 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("trusted_on [%s]: got %v", tc.on, err)
		}
	}
}

func asParseError(err error, out **ParseError) bool {
	pe, ok := err.(*ParseError)
	*out = pe
	return ok
}
