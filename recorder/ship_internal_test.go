package recorder

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestReadChunk(t *testing.T) {
	line := func(n int) string { return strings.Repeat("x", n-1) + "\n" }
	tests := []struct {
		name   string
		file   string
		offset int64
		limit  int
		want   string
		err    error
	}{
		{"whole lines", line(10) + line(10), 0, 100, line(10) + line(10), nil},
		{"cut at the last line within the limit", line(10) + line(10) + line(10), 0, 25, line(10) + line(10), nil},
		{"from an offset", line(10) + line(5), 10, 100, line(5), nil},
		{"unfinished last line stays", line(10) + "partial", 0, 100, line(10), nil},
		{"only an unfinished line", "partial", 0, 100, "", nil},
		{"nothing left", line(10), 10, 100, "", nil},
		{"a line longer than the limit", line(50) + line(5), 0, 20, line(50) + line(5), nil},
		{"a line longer than any chunk", strings.Repeat("x", MaxLineBytes+40) + "\n", 0, 20, "", ErrLineTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := strings.NewReader(tc.file)
			got, err := readChunk(f, tc.offset, int64(len(tc.file)), tc.limit)
			if !errors.Is(err, tc.err) || string(got) != tc.want {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	s := &Shipper{cfg: ShipperConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, Rand: rand.Reader}}
	for attempts := 1; attempts <= 12; attempts++ {
		full := min(100*time.Millisecond<<(attempts-1), 2*time.Second)
		seen := map[time.Duration]bool{}
		for range 50 {
			d := s.backoffLocked(attempts)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempts, d, full/2, full)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("attempt %d: only %d distinct delays: no jitter", attempts, len(seen))
		}
	}
	// A failing Rand does not break the backoff.
	s.cfg.Rand = bytes.NewReader(nil)
	if d := s.backoffLocked(3); d != 200*time.Millisecond {
		t.Fatalf("backoff without randomness %v", d)
	}
}
