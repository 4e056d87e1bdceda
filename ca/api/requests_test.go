package api_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sshward/sshward/ca/api"
)

// decodeStrict decodes like the CA server does: one object, no unknown fields.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func TestParseRequestID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"REQ-7K3M9QXA", "REQ-7K3M9QXA", true},
		{" req-7k3m9qxa\n", "REQ-7K3M9QXA", true},
		{"REQ-ABCD", "REQ-ABCD", true},
		{"REQ-ABC", "", false},                        // too short
		{"REQ-7K3M9QXI", "", false},                   // I is not in Crockford base32
		{"REQ-7K3M9QX/", "", false},                   // path characters
		{"REQ-../../x", "", false},                    // path traversal
		{"7K3M9QXA", "", false},                       // no prefix
		{"REQ-" + strings.Repeat("A", 29), "", false}, // too long
		{"", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := api.ParseRequestID(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseRequestID(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestCreateRequestCheck(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		mustSay string // "" = valid
	}{
		{"valid", `{"tier":"break-glass","reason":"INC-4711 db down","principals":["root"],"ttl":"5m"}`, ""},
		{"ttl in seconds", `{"tier":"break-glass","reason":"INC-1","ttl":300}`, ""},
		{"no tier", `{"reason":"INC-1"}`, "tier is required"},
		{"no reason", `{"tier":"break-glass"}`, "reason is required"},
		{"blank reason", `{"tier":"break-glass","reason":"   "}`, "reason is required"},
		{"newline in reason", `{"tier":"break-glass","reason":"INC-1\nfake line"}`, "one line"},
		{"long reason", `{"tier":"break-glass","reason":"` + strings.Repeat("x", 1025) + `"}`, "longer than 1024"},
		{"negative ttl", `{"tier":"break-glass","reason":"x","ttl":-5}`, "negative"},
		{"empty principal", `{"tier":"break-glass","reason":"x","principals":[""]}`, "not valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r api.CreateRequest
			if err := decodeStrict([]byte(tc.body), &r); err != nil {
				t.Fatal(err)
			}
			err := r.Check()
			if tc.mustSay == "" && err != nil || tc.mustSay != "" && (err == nil || !strings.Contains(err.Error(), tc.mustSay)) {
				t.Fatalf("Check() = %v, want %q", err, tc.mustSay)
			}
		})
	}
	var r api.CreateRequest
	if err := decodeStrict([]byte(`{"tier":"x","reason":"y","approved":true}`), &r); err == nil {
		t.Fatal("an unknown field (approved) was accepted")
	}
}

func TestDecisionCheck(t *testing.T) {
	if err := (&api.Decision{}).Check(false); err != nil {
		t.Errorf("approve without reason: %v", err)
	}
	if err := (&api.Decision{}).Check(true); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("deny without reason: %v", err)
	}
	if err := (&api.Decision{Reason: "ok\x1b[2J"}).Check(false); err == nil {
		t.Error("terminal escape in a reason was accepted")
	}
}

func TestExtReasonValue(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	got := api.ExtReasonValue(long)
	if len(got) > api.MaxExtReasonBytes || !utf8.ValidString(got) || !strings.HasPrefix(long, got) || len(got) < api.MaxExtReasonBytes-1 {
		t.Fatalf("ExtReasonValue cut %d bytes: valid=%v", len(got), utf8.ValidString(got))
	}
	if got := api.ExtReasonValue("INC-4711"); got != "INC-4711" {
		t.Fatalf("short reason changed: %q", got)
	}
}

func TestAccessRequestJSON(t *testing.T) {
	at := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	in := api.AccessRequest{
		ID: "REQ-7K3M9QXA", State: api.StateApproved, Requester: "olivia", Tier: "break-glass", Reason: "INC-4711",
		Principals: []string{"root"}, TTL: api.Duration(10 * time.Minute), CreatedAt: at, ExpiresAt: at.Add(30 * time.Minute),
		ApprovalsNeeded: 2, Approvals: []api.Vote{{By: "ian", At: at, Reason: "ok"}, {By: "ivy", At: at}},
		Approvers: []string{"incident-commanders"}, CanApprove: true,
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"id":"REQ-7K3M9QXA"`, `"state":"approved"`, `"ttl":"10m0s"`, `"approvals_needed":2`, `"by":"ian"`} {
		if !bytes.Contains(b, []byte(field)) {
			t.Errorf("JSON lacks %s: %s", field, b)
		}
	}
	var out api.AccessRequest
	if err := decodeStrict(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n in %+v\nout %+v", in, out)
	}
	if got := out.ApproverNames(); strings.Join(got, ",") != "ian,ivy" {
		t.Fatalf("ApproverNames = %v", got)
	}
}

// FuzzRequestBodies feeds the bodies the access-request API decodes
// (create, approve/deny, host use report) through the strict decoder and
// their Check: nothing panics, and what Check accepts keeps its invariants
// and survives a JSON round trip.
func FuzzRequestBodies(f *testing.F) {
	f.Add(`{"tier":"break-glass","reason":"INC-4711","principals":["root"],"ttl":"10m"}`)
	f.Add(`{"tier":"t","reason":"r","ttl":600}`)
	f.Add(`{"reason":"approved on the bridge"}`)
	f.Add(`{"serial":42,"session_id":"s-1"}`)
	f.Add(`{"tier":"t","reason":"\u0000"}`)
	f.Add(`{"tier":"t","reason":"a","ttl":"-1h"}`)
	f.Fuzz(func(t *testing.T, body string) {
		var c api.CreateRequest
		if decodeStrict([]byte(body), &c) == nil && c.Check() == nil {
			if strings.TrimSpace(c.Reason) == "" || len(c.Reason) > api.MaxReasonBytes || !utf8.ValidString(c.Reason) || c.TTL < 0 || c.Tier == "" {
				t.Fatalf("Check accepted %+v", c)
			}
			if strings.ContainsAny(c.Reason, "\n\r\x1b") {
				t.Fatalf("Check accepted control characters: %q", c.Reason)
			}
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			var again api.CreateRequest
			if err := decodeStrict(b, &again); err != nil || !slices.Equal(c.Principals, again.Principals) || c.Reason != again.Reason || c.TTL != again.TTL {
				t.Fatalf("round trip: %v %+v vs %+v", err, c, again)
			}
		}
		var d api.Decision
		if decodeStrict([]byte(body), &d) == nil && d.Check(true) == nil && strings.TrimSpace(d.Reason) == "" {
			t.Fatalf("a denial without reason passed: %+v", d)
		}
		var u api.RequestUsed
		if decodeStrict([]byte(body), &u) == nil && u.Check() == nil && u.Serial == 0 {
			t.Fatalf("a use report without serial passed: %+v", u)
		}
	})
}

// FuzzParseRequestID: an accepted id is canonical (parsing it again gives
// itself) and safe in a URL path and a certificate extension.
func FuzzParseRequestID(f *testing.F) {
	for _, s := range []string{"REQ-7K3M9QXA", "req-abcd", "REQ-", "REQ-ÄBCD", "REQ-../..", " REQ-0000 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := api.ParseRequestID(s)
		if err != nil {
			return
		}
		again, err := api.ParseRequestID(id)
		if err != nil || again != id {
			t.Fatalf("not canonical: %q → %q → %q, %v", s, id, again, err)
		}
		if !strings.HasPrefix(id, "REQ-") || len(id) > 32 || strings.ContainsAny(id, "/?#%. ") {
			t.Fatalf("unsafe id %q", id)
		}
	})
}

// FuzzExtReasonValue: the extension value is bounded, valid UTF-8 and a
// prefix of the (repaired) reason.
func FuzzExtReasonValue(f *testing.F) {
	f.Add("INC-4711")
	f.Add(strings.Repeat("é", 200))
	f.Add(strings.Repeat("a", 255) + "\xff\xfe")
	f.Fuzz(func(t *testing.T, s string) {
		got := api.ExtReasonValue(s)
		if len(got) > api.MaxExtReasonBytes || !utf8.ValidString(got) || !strings.HasPrefix(strings.ToValidUTF8(s, "\uFFFD"), got) {
			t.Fatalf("ExtReasonValue(%q) = %q", s, got)
		}
	})
}
