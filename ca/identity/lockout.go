package identity

import "time"

// Lockout defaults.
const (
	DefaultLockoutThreshold = 5
	DefaultLockoutBase      = 30 * time.Second
	DefaultLockoutMax       = 15 * time.Minute
)

// Lockout is the failed-login backoff schedule. The zero value (and any zero
// field) means the defaults: locked for 30 s at the 5th consecutive failure,
// doubling with each further failure, at most 15 min.
type Lockout struct {
	Threshold int           // consecutive failures before the account locks; default 5
	Base      time.Duration // lock time at the threshold; default 30s
	Max       time.Duration // longest lock; default 15m
}

// Until returns when an account with failures consecutive failures, the last
// at lastFailure, unlocks; the zero time when it is not locked. The lock is
// Base at Threshold failures and doubles per failure past it, up to Max:
// with the defaults 5 → 30s, 6 → 1m, 7 → 2m, 8 → 4m, 9 → 8m, 10+ → 15m.
func (l Lockout) Until(failures int, lastFailure time.Time) time.Time {
	if l.Threshold <= 0 {
		l.Threshold = DefaultLockoutThreshold
	}
	if l.Base <= 0 {
		l.Base = DefaultLockoutBase
	}
	if l.Max <= 0 {
		l.Max = DefaultLockoutMax
	}
	if failures < l.Threshold {
		return time.Time{}
	}
	d := min(l.Base, l.Max)
	for i := l.Threshold; i < failures && d < l.Max; i++ {
		if d > l.Max/2 { // doubling would pass Max (or overflow)
			d = l.Max
			break
		}
		d *= 2
	}
	return lastFailure.Add(d)
}
