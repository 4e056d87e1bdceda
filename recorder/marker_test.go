package recorder

import (
	"testing"
)

func TestParseMarkerRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    Metadata
	}{
		{"exec with quotes and spaces", Metadata{Identity: "alice@local", Principal: "alice", KeyID: `alice@local tier=staging req=- serial=7`,
			Serial: 7, Tier: "staging", ClientAddr: "127.0.0.1:5000", Kind: KindExec, Command: `echo "a=b" \ x; uname -a`}},
		{"break-glass", Metadata{Identity: "bob@oidc", Principal: "root", KeyID: "k", Serial: 1, Tier: "break-glass", ClientAddr: "[::1]:22",
			Kind: KindShell, RequestID: "REQ-1", Reason: "INC-4711 disk full ✓", Approvers: []string{"ivan", "irene"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, ok := ParseMarker(startMarker(tc.m))
			if !ok {
				t.Fatalf("ParseMarker(%q) failed", startMarker(tc.m))
			}
			if f["command"] != tc.m.Command || f["key_id"] != tc.m.KeyID || f["reason"] != tc.m.Reason || f["tier"] != tc.m.Tier || f["user"] != tc.m.Identity {
				t.Fatalf("fields %q from %q", f, startMarker(tc.m))
			}
		})
	}
	for _, bad := range []string{"", "hello", `session start user="unterminated`, "session start =x", "session startx user=a"} {
		if f, ok := ParseMarker(bad); ok && len(f) > 0 {
			t.Errorf("ParseMarker(%q) = %q, want refusal or nothing", bad, f)
		}
	}
}

func FuzzParseMarker(f *testing.F) {
	f.Add("session start user=alice command=\"ls -l\"")
	f.Add("session end status=0")
	f.Fuzz(func(t *testing.T, label string) {
		fields, ok := ParseMarker(label)
		if !ok {
			return
		}
		// Whatever parses re-encodes to a label that parses to the same fields.
		var m Metadata
		m.Command = fields["command"]
		if label := startMarker(m); m.Command != "" && len(label) < maxMarker {
			g, ok := ParseMarker(label)
			if !ok || g["command"] != m.Command {
				t.Fatalf("command %q did not survive: %q", m.Command, g)
			}
		}
	})
}
