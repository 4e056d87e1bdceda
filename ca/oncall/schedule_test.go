package oncall_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/oncall"
)

// The schedule in the package doc, with a cover for dave. Fixed dates are
// fine here: nothing in this file reads the wall clock.
const doc = `
time_zone: Europe/Berlin
rotations:
  sre-primary:
    members: [alice, bob, carol]
    start: 2026-01-05T09:00
    shift: 7d
  db:
    members: [erin]
    start: 2026-01-01T00:00:00Z
    shift: 12h
overrides:
  - {rotation: sre-primary, user: dave, start: 2026-01-07T12:00, end: 2026-01-08T12:00}
`

func berlin(t *testing.T, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustParse(t *testing.T, s string) *oncall.Schedule {
	t.Helper()
	sched, err := oncall.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return sched
}

func TestShiftAt(t *testing.T) {
	s := mustParse(t, doc)
	tests := []struct {
		name       string
		user, at   string
		want       bool
		start, end string
	}{
		{name: "before the rotation starts", user: "alice", at: "2026-01-05 08:59"},
		{name: "first turn", user: "alice", at: "2026-01-05 09:00", want: true, start: "2026-01-05 09:00", end: "2026-01-07 12:00"},
		{name: "a cover cuts the turn: alice is off during it", user: "alice", at: "2026-01-07 13:00"},
		{name: "the cover itself", user: "dave", at: "2026-01-07 13:00", want: true, start: "2026-01-07 12:00", end: "2026-01-08 12:00"},
		{name: "alice again after the cover", user: "alice", at: "2026-01-09 10:00", want: true, start: "2026-01-08 12:00", end: "2026-01-12 09:00"},
		{name: "handover to bob", user: "bob", at: "2026-01-12 09:00", want: true, start: "2026-01-12 09:00", end: "2026-01-19 09:00"},
		{name: "end is exclusive", user: "alice", at: "2026-01-12 09:00"},
		{name: "not in any rotation", user: "mallory", at: "2026-01-12 09:00"},
		// Europe/Berlin leaves CET for CEST on 2026-03-29: the handover
		// stays at 09:00 wall-clock, so that turn is 167 hours long.
		{name: "handover keeps its wall-clock time across DST", user: "carol", at: "2026-03-30 08:59", want: true, start: "2026-03-23 09:00", end: "2026-03-30 09:00"},
		// A one-member rotation is one long shift, joined up to a bound.
		{name: "back-to-back turns are one shift", user: "erin", at: "2026-01-01 01:00", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sh, ok := s.ShiftAt(tt.user, berlin(t, tt.at))
			if ok != tt.want {
				t.Fatalf("ShiftAt(%s, %s) on call = %v, want %v (%+v)", tt.user, tt.at, ok, tt.want, sh)
			}
			if !ok || tt.start == "" {
				return
			}
			if !sh.Start.Equal(berlin(t, tt.start)) || !sh.End.Equal(berlin(t, tt.end)) || sh.User != tt.user {
				t.Fatalf("ShiftAt(%s, %s) = %s … %s, want %s … %s", tt.user, tt.at, sh.Start, sh.End, tt.start, tt.end)
			}
		})
	}
	if sh, _ := s.ShiftAt("erin", berlin(t, "2026-01-01 01:00")); sh.End.Sub(sh.Start) < 24*time.Hour {
		t.Errorf("erin's joined shift %s … %s is not longer than one turn", sh.Start, sh.End)
	}
	want := map[string]string{"sre-primary": "dave", "db": "erin"}
	if got := s.OnCall(berlin(t, "2026-01-07 13:00")); !reflect.DeepEqual(got, want) {
		t.Errorf("OnCall = %v, want %v", got, want)
	}
}

func TestParseRefuses(t *testing.T) {
	rot := "rotations: {r: {members: [a], start: 2026-01-01T00:00, shift: 8h}}\n"
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "rotation: {}\n", "rotation"},
		{"bad zone", "time_zone: Mars/Olympus\n", "time_zone"},
		{"no members", "rotations: {r: {members: [], start: 2026-01-01T00:00, shift: 8h}}\n", "members is empty"},
		{"bad member", "rotations: {r: {members: ['a b'], start: 2026-01-01T00:00, shift: 8h}}\n", "members[0]"},
		{"no start", "rotations: {r: {members: [a], shift: 8h}}\n", "start: required"},
		{"bad start", "rotations: {r: {members: [a], start: tomorrow, shift: 8h}}\n", "rotations.r: start"},
		{"shift too short", "rotations: {r: {members: [a], start: 2026-01-01T00:00, shift: 30s}}\n", "shift"},
		{"shift in weeks", "rotations: {r: {members: [a], start: 2026-01-01T00:00, shift: 1w}}\n", "shift"},
		{"zero days", "rotations: {r: {members: [a], start: 2026-01-01T00:00, shift: 0d}}\n", "shift"},
		{"override of an unknown rotation", rot + "overrides: [{rotation: x, user: b, start: 2026-01-01T00:00, end: 2026-01-02T00:00}]\n", "overrides[0]: rotation \"x\""},
		{"override ends first", rot + "overrides: [{rotation: r, user: b, start: 2026-01-02T00:00, end: 2026-01-01T00:00}]\n", "not after start"},
		{"override without user", rot + "overrides: [{rotation: r, start: 2026-01-01T00:00, end: 2026-01-02T00:00}]\n", "user"},
		{"not yaml", "rotations: [\n", "line"},
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

// TestFileReload: an edit takes effect without a restart; a broken edit
// leaves the last good schedule in force and is reported.
func TestFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oncall.yaml")
	write := func(s string, bump int) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := time.Unix(1_700_000_000+int64(bump), 0) // distinct mtimes on any filesystem
		if err := os.Chtimes(path, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	write("rotations: {r: {members: [alice], start: 2026-01-01T00:00:00Z, shift: 8h}}\n", 0)
	f, err := oncall.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	onCall := func(user string) bool {
		_, ok, err := f.ShiftAt(t.Context(), user, at)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	gen0 := f.Generation()
	if !onCall("alice") || onCall("bob") {
		t.Fatal("first schedule not in force")
	}
	write("rotations: {r: {members: [bob], start: 2026-01-01T00:00:00Z, shift: 8h}}\n", 1)
	if onCall("alice") || !onCall("bob") || f.Generation() == gen0 {
		t.Fatal("an edit did not take effect")
	}
	write("rotations: {r: {members: [], start: 2026-01-01T00:00:00Z, shift: 8h}}\n", 2)
	if !onCall("bob") {
		t.Fatal("a broken edit replaced the schedule in force")
	}
	if err := f.Err(); err == nil || !strings.Contains(err.Error(), "members is empty") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Err = %v, want the broken entry and the path", err)
	}
	if _, err := f.Reload(); err == nil {
		t.Fatal("Reload accepted a broken file")
	}
	if _, err := oncall.Open(path); err == nil {
		t.Fatal("Open accepted a broken file")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(doc))
	f.Add([]byte("rotations: {r: {members: [a], start: 0001-01-01T00:00:00Z, shift: 1m}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := oncall.Parse(data)
		if err != nil {
			return
		}
		for _, at := range []time.Time{{}, time.Date(2026, 3, 29, 2, 30, 0, 0, time.UTC), time.Unix(1<<40, 0)} {
			for _, r := range s.Rotations {
				for _, m := range r.Members {
					if sh, ok := s.ShiftAt(m, at); ok && (at.Before(sh.Start) || !at.Before(sh.End)) {
						t.Fatalf("shift %s … %s does not hold %s", sh.Start, sh.End, at)
					}
				}
			}
		}
	})
}
