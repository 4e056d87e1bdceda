// Package oncall reads the on-call schedule the CA enforces (DESIGN.md
// "Tiers": a tier may require its users to be on call now) and answers one
// question: is this user on call at t, and until when?
//
// It is pure, like ca/policy: Parse turns bytes into a Schedule, File adds
// the file on disk (re-read when it changes, or on Reload). The CA uses the
// answer three ways: it refuses a requires_oncall tier to anyone off call,
// caps a certificate's validity at the end of the holder's shift, and
// revokes what is left of it when the shift ends (ca/oncall.go).
//
// The file (YAML, one document; unknown keys are refused):
//
//	time_zone: Europe/Berlin      # IANA name: times without an offset, and
//	                              # day-long shifts, follow it (default UTC)
//	rotations:
//	  sre-primary:
//	    members: [alice, bob, carol]  # take turns in this order
//	    start: 2026-01-05T09:00       # alice's first shift starts here
//	    shift: 7d                     # each turn: Nd (whole days, handover at the
//	                                  # same wall-clock time across DST) or 12h, 90m
//	overrides:                        # one-off cover: user takes the rotation
//	  - {rotation: sre-primary, user: dave, start: 2026-12-24T09:00, end: 2026-12-27T09:00}
//
// During an override the rotation's scheduled member is off call for that
// rotation and the override's user is on call. A user is on call at t when
// some rotation has them at t; their shift ends at the first moment after t
// when no rotation has them (consecutive turns and covers are one shift).
package oncall

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Limits of a schedule file.
const (
	// MaxBytes bounds the file Parse accepts.
	MaxBytes = 1 << 20
	// MinShift is the shortest turn a rotation may have.
	MinShift = time.Minute
	// maxMerge bounds how many adjacent pieces ShiftAt joins into one
	// shift (a one-member rotation would otherwise never end).
	maxMerge = 64
	// maxYears is how long a rotation runs from its start: beyond it
	// nobody is on call in it (and time.Duration arithmetic cannot
	// overflow).
	maxYears = 100
)

// Schedule is a parsed schedule file. It is read-only once built and safe
// for concurrent use.
type Schedule struct {
	Location  *time.Location
	Rotations []Rotation // sorted by name
	Overrides []Override // in file order
}

// Rotation hands the pager from member to member, one turn each, from
// Start on for 100 years; outside that nobody is on call in it.
type Rotation struct {
	Name    string
	Members []string
	Start   time.Time // in Location
	// Every is a fixed turn length, or 0 when Days is set.
	Every time.Duration
	// Days is a turn of whole calendar days in the schedule's time zone,
	// or 0 when Every is set.
	Days int
}

// Override puts User on call for Rotation during [Start, End), instead of
// the rotation's member.
type Override struct {
	Rotation   string
	User       string
	Start, End time.Time
}

// Shift is one stretch of on-call duty: the user is on call from Start
// (the earliest start among the pieces joined) until End, exclusive.
type Shift struct {
	User       string
	Rotation   string // the rotation of the piece covering the instant asked about
	Start, End time.Time
}

// ErrSchedule marks a schedule file that cannot be used; the wrapping
// message names the entry and the fix.
var ErrSchedule = errors.New("oncall: invalid schedule")

type file struct {
	TimeZone  string `yaml:"time_zone"`
	Rotations map[string]struct {
		Members []string `yaml:"members"`
		Start   string   `yaml:"start"`
		Shift   string   `yaml:"shift"`
	} `yaml:"rotations"`
	Overrides []struct {
		Rotation string `yaml:"rotation"`
		User     string `yaml:"user"`
		Start    string `yaml:"start"`
		End      string `yaml:"end"`
	} `yaml:"overrides"`
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSchedule, fmt.Sprintf(format, args...))
}

// Parse reads a schedule file. It returns a complete, valid schedule or an
// error naming the line or entry, never a partial schedule.
func Parse(data []byte) (*Schedule, error) {
	if len(data) > MaxBytes {
		return nil, bad("the file is %d bytes, more than %d", len(data), MaxBytes)
	}
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, bad("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	s := &Schedule{Location: time.UTC}
	if f.TimeZone != "" {
		loc, err := time.LoadLocation(f.TimeZone)
		if err != nil || f.TimeZone == "Local" {
			return nil, bad("time_zone %q is not an IANA time zone name such as Europe/Berlin or UTC", f.TimeZone)
		}
		s.Location = loc
	}
	names := make([]string, 0, len(f.Rotations))
	for name := range f.Rotations {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		r := f.Rotations[name]
		at := fmt.Sprintf("rotations.%s", name)
		if !validName(name) {
			return nil, bad("%s: a rotation name is 1-64 letters, digits, '.', '_' or '-'", at)
		}
		if len(r.Members) == 0 {
			return nil, bad("%s: members is empty: list who takes turns", at)
		}
		for i, m := range r.Members {
			if !validName(m) {
				return nil, bad("%s: members[%d] %q is not a user name", at, i, m)
			}
		}
		start, err := s.parseTime(r.Start)
		if err != nil {
			return nil, bad("%s: start: %v", at, err)
		}
		rot := Rotation{Name: name, Members: r.Members, Start: start}
		if rot.Every, rot.Days, err = parseShift(r.Shift); err != nil {
			return nil, bad("%s: shift: %v", at, err)
		}
		s.Rotations = append(s.Rotations, rot)
	}
	for i, o := range f.Overrides {
		at := fmt.Sprintf("overrides[%d]", i)
		if _, ok := s.rotation(o.Rotation); !ok {
			return nil, bad("%s: rotation %q is not defined under rotations", at, o.Rotation)
		}
		if !validName(o.User) {
			return nil, bad("%s: user %q is not a user name", at, o.User)
		}
		start, err := s.parseTime(o.Start)
		if err != nil {
			return nil, bad("%s: start: %v", at, err)
		}
		end, err := s.parseTime(o.End)
		if err != nil {
			return nil, bad("%s: end: %v", at, err)
		}
		if !end.After(start) {
			return nil, bad("%s: end %s is not after start %s", at, o.End, o.Start)
		}
		s.Overrides = append(s.Overrides, Override{Rotation: o.Rotation, User: o.User, Start: start, End: end})
	}
	return s, nil
}

// parseTime reads RFC 3339 (with an offset), or a local date and time in
// the schedule's zone: 2026-01-05T09:00[:00] or 2026-01-05 09:00[:00].
func (s *Schedule) parseTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, errors.New("required: write a date and time such as 2026-01-05T09:00")
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.In(s.Location), nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04"} {
		if t, err := time.ParseInLocation(layout, v, s.Location); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date and time: write 2026-01-05T09:00 (in time_zone) or 2026-01-05T09:00:00Z", v)
}

// parseShift reads "7d" (whole days) or a Go duration of at least MinShift.
func parseShift(v string) (time.Duration, int, error) {
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > 366 {
			return 0, 0, fmt.Errorf("%q: write whole days from 1d to 366d, or a duration such as 12h", v)
		}
		return 0, n, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < MinShift || d > 366*24*time.Hour {
		return 0, 0, fmt.Errorf("%q: write a duration from 1m to 8784h such as 12h, or whole days such as 7d", v)
	}
	return d, 0, nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@') {
			return false
		}
	}
	return true
}

func (s *Schedule) rotation(name string) (*Rotation, bool) {
	for i := range s.Rotations {
		if s.Rotations[i].Name == name {
			return &s.Rotations[i], true
		}
	}
	return nil, false
}

// turn returns the turn of r covering t: its index and [start, end).
func (s *Schedule) turn(r *Rotation, t time.Time) (n int64, start, end time.Time, ok bool) {
	if t.Before(r.Start) || !t.Before(r.Start.AddDate(maxYears, 0, 0)) {
		return 0, time.Time{}, time.Time{}, false
	}
	if r.Every > 0 {
		n = int64(t.Sub(r.Start) / r.Every)
		start = r.Start.Add(time.Duration(n) * r.Every)
		return n, start, start.Add(r.Every), true
	}
	// Whole days in the schedule's zone: the handover keeps its wall-clock
	// time across DST, so a turn may be an hour shorter or longer. Start
	// from the estimate by elapsed time and step to the turn holding t.
	span := time.Duration(r.Days) * 24 * time.Hour
	n = int64(t.Sub(r.Start) / span)
	at := func(k int64) time.Time { return r.Start.In(s.Location).AddDate(0, 0, int(k)*r.Days) }
	for range 4 {
		switch {
		case t.Before(at(n)):
			n--
		case !t.Before(at(n + 1)):
			n++
		default:
			return n, at(n), at(n + 1), true
		}
	}
	return n, at(n), at(n + 1), !t.Before(at(n)) && t.Before(at(n+1))
}

// piece returns the stretch of rotation r during which user is on call and
// which holds t: the scheduled turn minus overrides, or an override.
func (s *Schedule) piece(r *Rotation, user string, t time.Time) (start, end time.Time, ok bool) {
	// An override covering t decides alone.
	for _, o := range s.Overrides {
		if o.Rotation == r.Name && !t.Before(o.Start) && t.Before(o.End) {
			if o.User != user {
				return time.Time{}, time.Time{}, false
			}
			return o.Start, o.End, true
		}
	}
	n, start, end, ok := s.turn(r, t)
	if !ok || r.Members[n%int64(len(r.Members))] != user {
		return time.Time{}, time.Time{}, false
	}
	// Overrides cut the turn short, or start it late.
	for _, o := range s.Overrides {
		if o.Rotation != r.Name {
			continue
		}
		if !o.Start.Before(t) && o.Start.Before(end) {
			end = o.Start
		}
		if !o.End.After(t) && o.End.After(start) {
			start = o.End
		}
	}
	return start, end, true
}

// pieceAt is the piece of any rotation holding t for user that ends last.
func (s *Schedule) pieceAt(user string, t time.Time) (Shift, bool) {
	var best Shift
	found := false
	for i := range s.Rotations {
		r := &s.Rotations[i]
		start, end, ok := s.piece(r, user, t)
		if ok && (!found || end.After(best.End)) {
			best, found = Shift{User: user, Rotation: r.Name, Start: start, End: end}, true
		}
	}
	return best, found
}

// ShiftAt reports whether user is on call at t and, if so, the shift: from
// the start of the piece holding t until the first instant after t when no
// rotation has them. Adjacent pieces (back-to-back turns, a cover that
// continues a turn) are joined, up to a bound.
func (s *Schedule) ShiftAt(user string, t time.Time) (Shift, bool) {
	sh, ok := s.pieceAt(user, t)
	if !ok {
		return Shift{}, false
	}
	for range maxMerge {
		next, ok := s.pieceAt(user, sh.End)
		if !ok {
			break
		}
		sh.End = next.End
	}
	return sh, true
}

// OnCall lists who is on call at t in each rotation (name → user), for
// status pages and tests.
func (s *Schedule) OnCall(t time.Time) map[string]string {
	out := map[string]string{}
	for i := range s.Rotations {
		r := &s.Rotations[i]
		for _, o := range s.Overrides {
			if o.Rotation == r.Name && !t.Before(o.Start) && t.Before(o.End) {
				out[r.Name] = o.User
			}
		}
		if _, ok := out[r.Name]; ok {
			continue
		}
		if n, _, _, ok := s.turn(r, t); ok {
			out[r.Name] = r.Members[n%int64(len(r.Members))]
		}
	}
	return out
}
