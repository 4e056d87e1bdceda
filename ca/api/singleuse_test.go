package api_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sshward/sshward/ca/api"
)

func TestCheckHostnames(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
		err  bool
	}{
		{"none", nil, nil, false},
		{"normalised and deduplicated", []string{" DB1.prod ", "db1.prod", "db2"}, []string{"db1.prod", "db2"}, false},
		{"shell metacharacters", []string{"db1;id"}, nil, true},
		{"comma inside a name", []string{"db1,db2"}, nil, true},
		{"leading hyphen", []string{"-db1"}, nil, true},
		{"empty label", []string{"db1..prod"}, nil, true},
		{"empty", []string{""}, nil, true},
		{"wildcard", []string{"*.prod"}, nil, true},
		{"label of 64", []string{strings.Repeat("a", 64)}, nil, true},
		{"too many", slices.Repeat([]string{"h"}, api.MaxRequestHosts+1), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := api.CheckHostnames(tt.in)
			if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
				t.Fatalf("CheckHostnames(%q) = %q, %v", tt.in, got, err)
			}
		})
	}
	if got := api.ParseExtHosts(" db1.prod,,DB2.prod "); !slices.Equal(got, []string{"db1.prod", "db2.prod"}) {
		t.Errorf("ParseExtHosts = %q", got)
	}
}

// FuzzHostnames: accepted target hosts survive the trip through the
// hosts@sshward extension unchanged (no name can smuggle a comma or split
// into two), and a claim body that passes Check is bounded.
func FuzzHostnames(f *testing.F) {
	f.Add("db1.prod\x00DB2.prod", `{"session_id":"s1","request_id":"REQ-AAAA","client_addr":"127.0.0.1:2"}`)
	f.Add("db1,db2\x00-x", `{"session_id":""}`)
	f.Add("a.b.c\x00a.b.c", `{"session_id":"s","extra":1}`)
	f.Fuzz(func(t *testing.T, list, body string) {
		hosts, err := api.CheckHostnames(strings.Split(list, "\x00"))
		if err == nil {
			for _, h := range hosts {
				if !api.ValidHostname(h) || h != strings.ToLower(h) || strings.ContainsAny(h, ", \n") {
					t.Fatalf("accepted %q", h)
				}
			}
			if back := api.ParseExtHosts(strings.Join(hosts, ",")); !slices.Equal(back, hosts) && len(hosts) > 0 {
				t.Fatalf("round trip %q → %q", hosts, back)
			}
		}
		var c api.SingleUseClaim
		if decodeStrict([]byte(body), &c) == nil && c.Check() == nil {
			if c.SessionID == "" || len(c.SessionID) > 256 || !utf8.ValidString(c.RequestID) || len(c.ClientAddr) > 256 {
				t.Fatalf("Check accepted %+v", c)
			}
			b, _ := json.Marshal(c)
			var again api.SingleUseClaim
			if err := decodeStrict(b, &again); err != nil || again != c {
				t.Fatalf("round trip: %v %+v vs %+v", err, c, again)
			}
		}
	})
}
