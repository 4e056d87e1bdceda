package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/oncall"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// openOnCall opens the on-call schedule config.yaml names (oncall_schedule,
// relative to the CA directory), or returns nil when none is named. A
// policy tier that uses the schedule without one, and a schedule that does
// not parse, refuse the start.
func openOnCall(dir string, cfg *config, pol *policy.Policy) (*oncall.File, error) {
	if cfg.OnCallSchedule == "" {
		for _, t := range pol.Tiers {
			if t.UsesOnCall() {
				return nil, fmt.Errorf("tier %s uses the on-call schedule (requires_oncall or oncall_approvals): name the schedule file in config.yaml, e.g. oncall_schedule: oncall.yaml", t.Name)
			}
		}
		return nil, nil
	}
	path := cfg.OnCallSchedule
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	return oncall.Open(path)
}

// runOnCall runs the CA's shift-end loop, and re-reads the schedule on
// SIGHUP (it is also re-read whenever the file changes). Only a CA with a
// schedule listens for SIGHUP; without one the signal keeps its default.
func runOnCall(ctx context.Context, a *ca.Authority, f *oncall.File, log *slog.Logger) error {
	if f == nil {
		return nil
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if _, err := f.Reload(); err != nil {
					log.Error("on-call schedule not reloaded: the last good one stays in force", "path", f.Path(), "err", err)
					continue
				}
				log.Info("on-call schedule reloaded", "path", f.Path())
				a.KickOnCall()
			}
		}
	}()
	log.Info("on-call schedule in force", "path", f.Path())
	return a.RunOnCall(ctx, ca.OnCallLoop{})
}

// onCallRow is one line of `sshward-ca oncall --json`.
type onCallRow struct {
	Rotation   string    `json:"rotation"`
	User       string    `json:"user"`
	ShiftStart time.Time `json:"shift_start"`
	ShiftEnd   time.Time `json:"shift_end"`
}

// cmdOnCall prints who is on call (now or --at) in each rotation of the
// schedule config.yaml names, and until when: what the CA enforces. It
// reads the files only, so it also checks an edit before SIGHUP.
func (e *env) cmdOnCall(_ context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca oncall --dir DIR [--at TIME] [--json]")
	dir := e.dirFlag(fs)
	at := fs.String("at", "", "the moment to ask about, RFC 3339 (default: now)")
	asJSON := fs.Bool("json", false, "print a JSON list of rotation, user, shift_start, shift_end")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	l := layout{*dir}
	if err := l.check(); err != nil {
		return err
	}
	when := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return fmtUsage("--at %q is not an RFC 3339 time such as 2026-12-24T09:00:00Z", *at)
		}
		when = t
	}
	cfg, err := loadConfig(l.config())
	if err != nil {
		return err
	}
	if cfg.OnCallSchedule == "" {
		return errors.New("no on-call schedule: name one in config.yaml, e.g. oncall_schedule: oncall.yaml")
	}
	pol, err := loadPolicy(l.policy())
	if err != nil {
		return err
	}
	f, err := openOnCall(l.dir, cfg, pol)
	if err != nil {
		return err
	}
	s, _ := f.Schedule()
	rows := []onCallRow{}
	who := s.OnCall(when)
	for _, r := range s.Rotations {
		u, ok := who[r.Name]
		if !ok {
			continue
		}
		sh, _ := s.ShiftAt(u, when)
		rows = append(rows, onCallRow{Rotation: r.Name, User: u, ShiftStart: sh.Start.UTC(), ShiftEnd: sh.End.UTC()})
	}
	if *asJSON {
		return cli.JSON(e.stdout, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(e.stdout, "nobody is on call at %s\n", when.In(s.Location).Format("2006-01-02 15:04 MST"))
		return nil
	}
	for _, r := range rows {
		fmt.Fprintf(e.stdout, "%-20s %-16s until %s\n", r.Rotation, r.User, r.ShiftEnd.In(s.Location).Format("Mon 2006-01-02 15:04 MST"))
	}
	return nil
}
