package main

import (
	"strings"
	"testing"
)

// TestCount gives each kind of client session and recording the verdict
// the summary promises; a soak that miscounted would pass on a loss.
func TestCount(t *testing.T) {
	seen := func(ns ...int) map[int]bool {
		m := map[int]bool{}
		for _, n := range ns {
			m[n] = true
		}
		return m
	}
	rec := func(id string, complete bool, integrity string, tag string, lines map[int]int) *recording {
		return &recording{ID: id, Complete: complete, Integrity: integrity, lines: map[string]map[int]int{tag: lines}}
	}
	tests := []struct {
		name     string
		sessions []*clientSession
		recs     []*recording
		want     func(s *summary) bool
	}{
		{"finished and complete",
			[]*clientSession{{Tag: "t000001", Lines: 2, Seen: seen(1, 2)}},
			[]*recording{rec("a", true, "verified", "t000001", map[int]int{1: 1, 2: 1})},
			func(s *summary) bool { return s.Recordings.Complete == 1 && s.Sessions.Finished == 1 }},
		{"cut by a kill, every printed line recorded",
			[]*clientSession{{Tag: "t000001", Lines: 5, Seen: seen(1, 2), Err: "exit status 255"}},
			[]*recording{rec("a", false, "verified", "t000001", map[int]int{1: 1, 2: 1, 3: 1})},
			func(s *summary) bool { return s.Recordings.CompleteCut == 1 && s.Sessions.Cut == 1 }},
		{"no recording at all",
			[]*clientSession{{Tag: "t000001", Lines: 2, Seen: seen(1, 2)}},
			nil,
			func(s *summary) bool { return s.Recordings.Lost == 1 }},
		{"a printed line missing from the recording",
			[]*clientSession{{Tag: "t000001", Lines: 3, Seen: seen(1, 2, 3)}},
			[]*recording{rec("a", true, "verified", "t000001", map[int]int{1: 1, 3: 1})},
			func(s *summary) bool {
				return s.Recordings.Lost == 1 && strings.Contains(s.Recordings.Detail[0], "lacks lines [2]")
			}},
		{"two recordings of one session",
			[]*clientSession{{Tag: "t000001", Lines: 1, Seen: seen(1)}},
			[]*recording{rec("a", true, "verified", "t000001", map[int]int{1: 1}), rec("b", true, "verified", "t000001", map[int]int{1: 1})},
			func(s *summary) bool { return s.Recordings.Duplicate == 1 }},
		{"a line twice in one recording",
			[]*clientSession{{Tag: "t000001", Lines: 2, Seen: seen(1, 2)}},
			[]*recording{rec("a", true, "verified", "t000001", map[int]int{1: 1, 2: 2})},
			func(s *summary) bool { return s.Recordings.Duplicate == 1 }},
		{"integrity not verified",
			[]*clientSession{{Tag: "t000001", Lines: 1, Seen: seen(1)}},
			[]*recording{rec("a", true, "tampered", "t000001", map[int]int{1: 1})},
			func(s *summary) bool { return s.Recordings.Corrupted == 1 }},
		{"export refused",
			[]*clientSession{{Tag: "t000001", Lines: 1, Seen: seen(1)}},
			[]*recording{{ID: "a", Complete: true, Integrity: "verified", problem: "export: integrity check failed",
				lines: map[string]map[int]int{"t000001": {1: 1}}}},
			func(s *summary) bool { return s.Recordings.Corrupted == 1 }},
		{"refused session, broken recording of nobody's output",
			[]*clientSession{{Tag: "t000001", Lines: 1, Seen: seen(), Err: "exit status 255"}},
			[]*recording{{ID: "z", Integrity: "signature mismatch"}},
			func(s *summary) bool {
				return s.Sessions.Refused == 1 && s.Sessions.Acknowledged == 0 && s.Recordings.Unmatched == 1 && s.Recordings.Corrupted == 1
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s summary
			s.count(tc.sessions, tc.recs)
			if !tc.want(&s) {
				t.Errorf("summary %+v %+v", s.Sessions, s.Recordings)
			}
			lossy := s.Recordings.Lost+s.Recordings.Corrupted+s.Recordings.Duplicate > 0
			s.Audit.CA.OK, s.Audit.Playback.OK = true, true
			if err := s.verdict(); lossy != (err != nil) && s.Sessions.Acknowledged > 0 {
				t.Errorf("verdict %v for lost %d corrupted %d duplicate %d", err, s.Recordings.Lost, s.Recordings.Corrupted, s.Recordings.Duplicate)
			}
		})
	}
}

// TestCastMarkers reads marker lines from a real cast whose output events
// split a line, and counts a repeated line twice.
func TestCastMarkers(t *testing.T) {
	cast := `{"version": 2, "width": 80, "height": 24, "timestamp": 1}
[0.1, "m", "session start"]
[0.2, "o", "SOAK t000007 001\r\nSOAK t0000"]
[0.3, "o", "07 002\r\n"]
[0.35, "i", "SOAK t000007 009\r\n"]
[0.4, "o", "SOAK t000007 002\r\n"]
`
	got, err := castMarkers(strings.NewReader(cast))
	if err != nil {
		t.Fatal(err)
	}
	if l := got["t000007"]; len(got) != 1 || l[1] != 1 || l[2] != 2 || l[9] != 0 {
		t.Errorf("markers %v, want line 1 once, line 2 twice, input ignored", got)
	}
}
