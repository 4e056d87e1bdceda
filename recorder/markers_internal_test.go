package recorder

import (
	"strings"
	"testing"
)

func TestMarkerLabels(t *testing.T) {
	zero := 0
	for _, tc := range []struct {
		end  EndInfo
		want string
	}{
		{EndInfo{ExitStatus: &zero}, "session end status=0"},
		{EndInfo{ExitSignal: "KILL"}, "session end signal=KILL"},
		{EndInfo{Reason: "revoked"}, "session end reason=revoked"},
		{EndInfo{}, "session end"},
	} {
		if got := endMarker(tc.end); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
	m := Metadata{
		SessionID: "x", Identity: "alice", Principal: "root", Serial: 42,
		Tier: "production", ClientAddr: "192.0.2.1:50022",
	}
	m.KeyID, m.Kind, m.Command = "", KindExec, "echo \"hi\"\n=x"
	want := `session start user=alice principal=root key_id="" serial=42 tier=production from=192.0.2.1:50022 kind=exec command="echo \"hi\"\n=x"`
	if got := startMarker(m); got != want {
		t.Errorf("start marker\n got %s\nwant %s", got, want)
	}
	m.Command = strings.Repeat("日", 2*maxMarker)
	if got := startMarker(m); len(got) > maxMarker || !strings.HasSuffix(got, "…") {
		t.Errorf("long start marker: %d bytes", len(got))
	}
}
