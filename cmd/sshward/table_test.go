package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestSessionTableWidth(t *testing.T) {
	start := time.Date(2026, 11, 21, 9, 0, 0, 0, time.Local)
	list := []sessionSummary{
		{ID: "0123456789abcdef01234567-12", User: "a-very-long-user-name", Host: "database-primary-7.eu-west.example.com",
			Tier: "break-glass", Start: start, End: start.Add(3*time.Minute + 4*time.Second), BreakGlass: true,
			Hits: []searchHit{
				{Time: 1.25, Text: "\x1b[31mrm -rf /var/lib/postgresql\x1b[0m " + strings.Repeat("and more ", 20)},
				{Time: 3725, Text: "\x1b]0;title\x07second\thit\r\n"},
				{Time: 4000, Text: "third"}, {Time: 4001, Text: "fourth"}, {Time: 4002, Text: "fifth"},
			}},
		{ID: "s2", User: "bo", Host: "h", Tier: "staging", Start: start, Live: true},
	}
	var out bytes.Buffer
	e := &env{stdout: &out}
	e.sessionTable(list)
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("want header, row, 3 hits, a \"more\" line and a row; got:\n%s", out.String())
	}
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("%d columns: %q", n, l)
		}
		if strings.ContainsAny(l, "\x1b\x07\t\r") {
			t.Errorf("control characters reach the terminal: %q", l)
		}
	}
	for i, sub := range []string{"DUR", "3m04s", "rm -rf /var/lib/postgresql", "second hit", "third", "… 2 more", "live"} {
		if !strings.Contains(out.String(), sub) {
			t.Errorf("check %d: table lacks %q:\n%s", i, sub, out.String())
		}
	}
	// Columns line up: every row's START begins where the header's does.
	col := strings.Index(lines[0], "START")
	for _, l := range []string{lines[1], lines[6]} {
		if !strings.HasPrefix(l[col:], "11-21") {
			t.Errorf("START not aligned in %q", l)
		}
	}
}

func TestOffsetAndDuration(t *testing.T) {
	for _, tt := range []struct {
		sec  float64
		want string
	}{{0, "0:00.0"}, {1.25, "0:01.2"}, {59.99, "0:59.9"}, {61, "1:01.0"}, {3725, "1:02:05"}, {-3, "0:00.0"}} {
		if got := offset(tt.sec); got != tt.want {
			t.Errorf("offset(%v) = %q, want %q", tt.sec, got, tt.want)
		}
	}
	start := time.Unix(0, 0)
	for _, tt := range []struct {
		s    sessionSummary
		want string
	}{
		{sessionSummary{Start: start, End: start.Add(12 * time.Second)}, "12s"},
		{sessionSummary{Start: start, End: start.Add(62 * time.Minute)}, "1h02m"},
		{sessionSummary{Start: start, Live: true}, "live"},
		{sessionSummary{Start: start}, "-"},
	} {
		if got := sessionDuration(tt.s); got != tt.want {
			t.Errorf("sessionDuration(%v) = %q, want %q", tt.s.End.Sub(tt.s.Start), got, tt.want)
		}
	}
}

func FuzzPrintableText(f *testing.F) {
	for _, s := range []string{"plain", "\x1b[1;31mred\x1b[0m", "\x1b]0;title\x07x", "\x1bP q\x1b\\", "\x1b", "\xff\xfe", "a\tb\r\n", "\u009b31m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := printableText(s)
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8 %q", got)
		}
		for _, r := range got {
			if r < 0x20 || r >= 0x7f && r <= 0x9f {
				t.Fatalf("control character %U in %q (from %q)", r, got, s)
			}
		}
		if len(got) > len(s) {
			t.Fatalf("grew: %q from %q", got, s)
		}
	})
}
