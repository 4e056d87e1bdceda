package oncall

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"time"

	"gopkg.in/yaml.v3"
)

// MaxExtraApprovals bounds extra_approvals (the CA refuses more from any
// plugin).
const MaxExtraApprovals = 10

// Schedule is a parsed schedule file (see the package doc).
type Schedule struct {
	Tiers          []string
	TicketPattern  *regexp.Regexp // nil: any reason
	ExtraApprovals int
	Rotation       *Rotation // nil: no rotation
	Shifts         []Shift
}

// Rotation hands the pager from slot to slot every Period from Start.
type Rotation struct {
	Start  time.Time
	Period time.Duration
	Slots  [][]string
}

// Shift puts Users on call for Start ≤ t < End.
type Shift struct {
	Start, End time.Time
	Users      []string
}

// file is the YAML form.
type file struct {
	Tiers          []string `yaml:"tiers"`
	TicketPattern  string   `yaml:"ticket_pattern"`
	ExtraApprovals *int     `yaml:"extra_approvals"`
	Rotation       *struct {
		Start  time.Time     `yaml:"start"`
		Period time.Duration `yaml:"period"`
		Slots  [][]string    `yaml:"slots"`
	} `yaml:"rotation"`
	Shifts []struct {
		Start time.Time `yaml:"start"`
		End   time.Time `yaml:"end"`
		Users []string  `yaml:"users"`
	} `yaml:"shifts"`
}

// Parse reads a schedule file. Unknown keys are errors (a typo must not
// silently drop a rule); errors name the line or the entry.
func Parse(data []byte) (*Schedule, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("oncall: schedule: %w", err)
	}
	s := &Schedule{Tiers: f.Tiers, ExtraApprovals: 1}
	if f.TicketPattern != "" {
		re, err := regexp.Compile(f.TicketPattern)
		if err != nil {
			return nil, fmt.Errorf("oncall: schedule: ticket_pattern: %w", err)
		}
		s.TicketPattern = re
	}
	if f.ExtraApprovals != nil {
		if *f.ExtraApprovals < 0 || *f.ExtraApprovals > MaxExtraApprovals {
			return nil, fmt.Errorf("oncall: schedule: extra_approvals %d is outside 0…%d", *f.ExtraApprovals, MaxExtraApprovals)
		}
		s.ExtraApprovals = *f.ExtraApprovals
	}
	if r := f.Rotation; r != nil {
		switch {
		case r.Start.IsZero():
			return nil, errors.New("oncall: schedule: rotation: start is required")
		case r.Period <= 0:
			return nil, errors.New("oncall: schedule: rotation: period must be positive (e.g. 168h)")
		case len(r.Slots) == 0:
			return nil, errors.New("oncall: schedule: rotation: slots is empty")
		}
		for i, users := range r.Slots {
			if err := checkUsers(users); err != nil {
				return nil, fmt.Errorf("oncall: schedule: rotation: slots[%d]: %w", i, err)
			}
		}
		s.Rotation = &Rotation{Start: r.Start, Period: r.Period, Slots: r.Slots}
	}
	for i, sh := range f.Shifts {
		if sh.Start.IsZero() || sh.End.IsZero() || !sh.End.After(sh.Start) {
			return nil, fmt.Errorf("oncall: schedule: shifts[%d]: start and end are required and end must be after start", i)
		}
		if err := checkUsers(sh.Users); err != nil {
			return nil, fmt.Errorf("oncall: schedule: shifts[%d]: %w", i, err)
		}
		s.Shifts = append(s.Shifts, Shift{Start: sh.Start, End: sh.End, Users: sh.Users})
	}
	return s, nil
}

func checkUsers(users []string) error {
	if len(users) == 0 {
		return errors.New("users is empty")
	}
	if slices.Contains(users, "") {
		return errors.New("a user name is empty")
	}
	return nil
}

// OnCall returns who is on call at t: the rotation's slot, then the
// shifts covering t, each name once.
func (s *Schedule) OnCall(t time.Time) []string {
	var out []string
	add := func(users []string) {
		for _, u := range users {
			if !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	if r := s.Rotation; r != nil && !t.Before(r.Start) {
		// Sub saturates for times centuries apart, which is harmless here.
		n := int64(t.Sub(r.Start) / r.Period)
		add(r.Slots[n%int64(len(r.Slots))])
	}
	for _, sh := range s.Shifts {
		if !t.Before(sh.Start) && t.Before(sh.End) {
			add(sh.Users)
		}
	}
	return out
}

// covers says whether the schedule reviews requests on tier.
func (s *Schedule) covers(tier string) bool {
	return len(s.Tiers) == 0 || slices.Contains(s.Tiers, tier)
}
