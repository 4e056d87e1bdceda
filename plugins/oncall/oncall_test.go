package oncall_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/plugins"
	"github.com/sshward/sshward/plugins/oncall"
	"github.com/sshward/sshward/plugins/plugintest"
)

const schedule = `
tiers: [break-glass]
ticket_pattern: '^INC-\d+'
extra_approvals: 1
rotation:
  start: 2026-01-05T09:00:00Z   # a Monday
  period: 168h
  slots:
    - [alice, bob]
    - [carol]
shifts:
  - {start: 2026-12-24T00:00:00Z, end: 2026-12-27T00:00:00Z, users: [dave, alice]}
`

func mustParse(t testing.TB, s string) *oncall.Schedule {
	t.Helper()
	sched, err := oncall.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return sched
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestOnCall(t *testing.T) {
	s := mustParse(t, schedule)
	tests := []struct {
		at   string
		want []string
	}{
		{"2026-01-05T08:59:59Z", nil}, // before the rotation starts
		{"2026-01-05T09:00:00Z", []string{"alice", "bob"}},
		{"2026-01-12T08:59:59Z", []string{"alice", "bob"}},
		{"2026-01-12T09:00:00Z", []string{"carol"}}, // handover
		{"2026-01-19T09:00:00Z", []string{"alice", "bob"}},
		{"2026-12-21T09:00:00Z", []string{"alice", "bob"}},         // week 50
		{"2026-12-24T00:00:00Z", []string{"alice", "bob", "dave"}}, // a shift adds dave, alice once
		{"2026-12-28T09:00:00Z", []string{"carol"}},
		{"2026-12-27T00:00:00Z", []string{"alice", "bob"}}, // shift end is exclusive
	}
	for _, tt := range tests {
		t.Run(tt.at, func(t *testing.T) {
			if got := s.OnCall(at(tt.at)); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("OnCall = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	s := mustParse(t, schedule)
	week0 := at("2026-01-06T03:00:00Z") // alice and bob on call
	week1 := at("2026-01-13T03:00:00Z") // carol on call
	tests := []struct {
		name      string
		requester string
		tier      string
		reason    string
		phase     string
		when      time.Time
		want      ca.PolicyDecision
	}{
		{name: "on call with ticket", requester: "alice", reason: "INC-4711 db down", when: week0,
			want: ca.PolicyDecision{Reason: "alice is on call"}},
		{name: "not on call needs one more", requester: "carol", reason: "INC-4711", when: week0,
			want: ca.PolicyDecision{ExtraApprovals: 1, Reason: "carol is not on call at 2026-01-06T03:00:00Z: 1 more approval(s) required"}},
		{name: "rotation moved on", requester: "alice", reason: "INC-1", when: week1,
			want: ca.PolicyDecision{ExtraApprovals: 1, Reason: "alice is not on call at 2026-01-13T03:00:00Z: 1 more approval(s) required"}},
		{name: "no ticket is denied, naming the pattern", requester: "alice", reason: "db down", when: week0,
			want: ca.PolicyDecision{Deny: true, Reason: `the reason must reference a ticket matching ^INC-\d+`}},
		{name: "ticket must lead", requester: "alice", reason: "see INC-4711", when: week0,
			want: ca.PolicyDecision{Deny: true, Reason: `the reason must reference a ticket matching ^INC-\d+`}},
		{name: "ticket without number", requester: "alice", reason: "INC-", when: week0,
			want: ca.PolicyDecision{Deny: true, Reason: `the reason must reference a ticket matching ^INC-\d+`}},
		{name: "same answer at approve", requester: "carol", reason: "INC-9", phase: "approve", when: week0,
			want: ca.PolicyDecision{ExtraApprovals: 1, Reason: "carol is not on call at 2026-01-06T03:00:00Z: 1 more approval(s) required"}},
		{name: "other tiers untouched", requester: "mallory", tier: "production", reason: "whatever", when: week0,
			want: ca.PolicyDecision{}},
		{name: "holiday cover", requester: "dave", reason: "INC-2", when: at("2026-12-25T12:00:00Z"),
			want: ca.PolicyDecision{Reason: "dave is on call"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ca.AccessRequestInfo{ID: "REQ-1", Phase: "create", Requester: tt.requester, Tier: "break-glass", Reason: tt.reason, CreatedAt: tt.when}
			if tt.tier != "" {
				r.Tier = tt.tier
			}
			if tt.phase != "" {
				r.Phase = tt.phase
			}
			if got := s.Decide(r, tt.when); got != tt.want {
				t.Fatalf("Decide = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "ticket_patern: x\n", "ticket_patern"},
		{"bad pattern", "ticket_pattern: '('\n", "ticket_pattern"},
		{"too many approvals", "extra_approvals: 11\n", "extra_approvals"},
		{"negative approvals", "extra_approvals: -1\n", "extra_approvals"},
		{"rotation without start", "rotation: {period: 168h, slots: [[a]]}\n", "start is required"},
		{"rotation without period", "rotation: {start: 2026-01-01T00:00:00Z, slots: [[a]]}\n", "period"},
		{"bad period", "rotation: {start: 2026-01-01T00:00:00Z, period: weekly, slots: [[a]]}\n", "line 1"},
		{"empty slot", "rotation: {start: 2026-01-01T00:00:00Z, period: 1h, slots: [[a], []]}\n", "slots[1]"},
		{"shift ends before it starts", "shifts: [{start: 2026-01-02T00:00:00Z, end: 2026-01-01T00:00:00Z, users: [a]}]\n", "shifts[0]"},
		{"shift without users", "shifts: [{start: 2026-01-01T00:00:00Z, end: 2026-01-02T00:00:00Z}]\n", "users is empty"},
		{"empty user", "shifts: [{start: 2026-01-01T00:00:00Z, end: 2026-01-02T00:00:00Z, users: ['']}]\n", "empty"},
		{"not yaml", "tiers: [\n", "line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := oncall.Parse([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	s := mustParse(t, "")
	if s.ExtraApprovals != 1 || s.TicketPattern != nil || s.Rotation != nil || len(s.Tiers) != 0 {
		t.Fatalf("empty schedule = %+v", s)
	}
	// Nobody on call, every tier covered, any reason: one more approval.
	d := s.Decide(ca.AccessRequestInfo{Requester: "alice", Tier: "staging", Reason: "x"}, at("2026-01-01T00:00:00Z"))
	if d.Deny || d.ExtraApprovals != 1 {
		t.Fatalf("Decide = %+v", d)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(schedule))
	f.Add([]byte("rotation: {start: 0001-01-01T00:00:01Z, period: 1ns, slots: [[a]]}\n"))
	f.Add([]byte("shifts: [{start: 2026-01-01T00:00:00Z, end: 9999-01-02T00:00:00Z, users: [a]}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := oncall.Parse(data)
		if err != nil {
			return
		}
		for _, when := range []time.Time{{}, at("2026-01-01T00:00:00Z"), time.Unix(1<<62, 0)} {
			for _, u := range s.OnCall(when) {
				if u == "" {
					t.Fatal("empty user on call")
				}
			}
			d := s.Decide(ca.AccessRequestInfo{Requester: "a", Tier: "t", Reason: "INC-1"}, when)
			if d.ExtraApprovals < 0 || d.ExtraApprovals > oncall.MaxExtraApprovals {
				t.Fatalf("decision out of bounds: %+v", d)
			}
		}
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyReloadsAndFailsClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oncall.yaml")
	writeFile(t, path, schedule)
	p, err := oncall.NewPolicy(path, func() time.Time { return at("2026-01-06T03:00:00Z") })
	if err != nil {
		t.Fatal(err)
	}
	r := ca.AccessRequestInfo{ID: "REQ-1", Requester: "carol", Tier: "break-glass", Reason: "INC-1"} // no CreatedAt: now
	steps := []struct {
		name    string
		write   string
		want    ca.PolicyDecision
		wantErr string
	}{
		{name: "as written", want: ca.PolicyDecision{ExtraApprovals: 1, Reason: "carol is not on call at 2026-01-06T03:00:00Z: 1 more approval(s) required"}},
		{name: "carol covers now", write: schedule + "  - {start: 2026-01-06T00:00:00Z, end: 2026-01-07T00:00:00Z, users: [carol]}\n",
			want: ca.PolicyDecision{Reason: "carol is on call"}},
		{name: "a broken edit fails closed", write: "ticket_pattern: '('\n", wantErr: "ticket_pattern"},
		{name: "fixed again", write: schedule, want: ca.PolicyDecision{ExtraApprovals: 1, Reason: "carol is not on call at 2026-01-06T03:00:00Z: 1 more approval(s) required"}},
	}
	for _, s := range steps {
		if s.write != "" {
			writeFile(t, path, s.write)
			// Make the change visible even on a coarse-mtime filesystem.
			mt := time.Now().Add(time.Duration(len(s.name)) * time.Second)
			if err := os.Chtimes(path, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
		d, err := p.Review(context.Background(), r)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("%s: Review = %+v, %v; want an error naming the file and %q", s.name, d, err, s.wantErr)
			}
			continue
		}
		if err != nil || d != s.want {
			t.Fatalf("%s: Review = %+v, %v; want %+v", s.name, d, err, s.want)
		}
	}
	if _, err := oncall.NewPolicy(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Error("NewPolicy accepted a missing file")
	}
}

// The shipped binary, driven by the CA's plugin client.
func TestPluginBinary(t *testing.T) {
	bin := plugintest.MustBuild(t, "github.com/sshward/sshward/plugins/oncall/cmd/sshward-plugin-oncall")
	path := filepath.Join(t.TempDir(), "oncall.yaml")
	writeFile(t, path, schedule)
	c, err := plugins.Load(t.Context(), plugins.Config{Name: "oncall", Kind: plugins.KindApproval, Path: bin.Path, SHA256: bin.SHA256,
		Args: []string{"--schedule", path}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	week0 := at("2026-01-06T03:00:00Z")
	tests := []struct {
		requester, reason string
		want              ca.PolicyDecision
	}{
		{"alice", "INC-1", ca.PolicyDecision{Reason: "alice is on call"}},
		{"carol", "INC-1", ca.PolicyDecision{ExtraApprovals: 1, Reason: "carol is not on call at 2026-01-06T03:00:00Z: 1 more approval(s) required"}},
		{"alice", "because", ca.PolicyDecision{Deny: true, Reason: `the reason must reference a ticket matching ^INC-\d+`}},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(tt.requester, "/", tt.reason), func(t *testing.T) {
			d, err := c.Review(t.Context(), ca.AccessRequestInfo{ID: fmt.Sprint("REQ-", i), Phase: "create", Requester: tt.requester,
				Tier: "break-glass", Reason: tt.reason, CreatedAt: week0})
			if err != nil || d != tt.want {
				t.Fatalf("Review = %+v, %v; want %+v", d, err, tt.want)
			}
		})
	}
	// A missing schedule stops the plugin at start with its reason.
	_, err = plugins.Load(t.Context(), plugins.Config{Name: "oncall", Kind: plugins.KindApproval, Path: bin.Path, SHA256: bin.SHA256,
		Args: []string{"--schedule", path + ".missing"}, StartTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Load with a missing schedule = %v", err)
	}
}
