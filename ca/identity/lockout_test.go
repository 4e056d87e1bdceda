package identity

import (
	"testing"
	"time"
)

func TestLockoutUntil(t *testing.T) {
	last := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	def := Lockout{}
	custom := Lockout{Threshold: 3, Base: time.Minute, Max: 5 * time.Minute}
	tests := []struct {
		name     string
		l        Lockout
		failures int
		want     time.Duration // 0: not locked
	}{
		{"no failures", def, 0, 0},
		{"below threshold", def, 4, 0},
		{"at threshold", def, 5, 30 * time.Second},
		{"one past", def, 6, time.Minute},
		{"two past", def, 7, 2 * time.Minute},
		{"three past", def, 8, 4 * time.Minute},
		{"four past", def, 9, 8 * time.Minute},
		{"capped", def, 10, 15 * time.Minute},
		{"far past, still capped", def, 1000, 15 * time.Minute},
		{"custom at threshold", custom, 3, time.Minute},
		{"custom doubled", custom, 5, 4 * time.Minute},
		{"custom capped", custom, 6, 5 * time.Minute},
		{"base above max", Lockout{Base: time.Hour, Max: time.Minute}, 5, time.Minute},
		{"huge max does not overflow", Lockout{Base: time.Nanosecond, Max: 1<<63 - 1}, 200, 1<<63 - 1},
		{"negative fields mean defaults", Lockout{Threshold: -1, Base: -1, Max: -1}, 6, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.l.Until(tt.failures, last)
			if tt.want == 0 {
				if !got.IsZero() {
					t.Errorf("Until = %s, want zero (not locked)", got)
				}
				return
			}
			if d := got.Sub(last); d != tt.want {
				t.Errorf("locked for %s, want %s", d, tt.want)
			}
		})
	}
}
