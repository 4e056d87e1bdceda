package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sshward/sshward/cmd/internal/cli"
)

// demoOnCallTiers are added to the demo's policy (README: On-call):
// oncall-prod only for whoever carries the pager, ending with the shift, and
// prod-ro approved at once for them (one incident commander otherwise). Both
// are trusted on production hosts; the demo's ssh_config reaches db1.prod as
// db1.oncall and db1.ro so plain ssh picks these tiers. In the demo the
// read-only tier's login is the engineer's own (a real one would be an
// account such as readonly).
const demoOnCallTiers = `
  oncall-prod:
    hosts: ["*.oncall"]
    trusted_on: [production]
    ttl: 4h
    max_ttl: 12h
    requires_oncall: true
    principals: {sre: ["{{user}}"]}
    end_session_on_expiry: true
  prod-ro:
    hosts: ["*.ro"]
    trusted_on: [production]
    ttl: 1h
    approvals: 1
    approvers: [incident-commanders]
    oncall_approvals: 0
    principals: {sre: ["{{user}}"]}
    end_session_on_expiry: true
`

// onCall is the demo's rotation, kept in demo.json for `sshward-demo handover`.
type onCall struct {
	Schedule string    `json:"schedule"`
	Rotation string    `json:"rotation"`
	Members  []string  `json:"members"`
	Start    time.Time `json:"start"`
	Shift    string    `json:"shift"`
	ShiftEnd time.Time `json:"shift_end"`
}

// setupOnCall adds the on-call tiers and a schedule in which the engineer
// carries the pager from the start of this hour for 8 hours, then ivan.
func setupOnCall(caDir, engineer string, now time.Time) (*onCall, error) {
	oc := &onCall{Schedule: filepath.Join(caDir, "oncall.yaml"), Rotation: "sre-primary",
		Members: []string{engineer, "ivan"}, Start: now.UTC().Truncate(time.Hour), Shift: "8h"}
	oc.ShiftEnd = oc.Start.Add(8 * time.Hour)
	if err := appendFile(filepath.Join(caDir, "policy.yaml"), demoOnCallTiers); err != nil {
		return nil, err
	}
	if err := appendFile(filepath.Join(caDir, "config.yaml"), "\noncall_schedule: oncall.yaml\n"); err != nil {
		return nil, err
	}
	return oc, os.WriteFile(oc.Schedule, []byte(oc.yaml("")), 0o600)
}

// yaml renders the schedule, with an optional overrides block.
func (oc *onCall) yaml(overrides string) string {
	s := fmt.Sprintf("# the demo's on-call rotation (README: On-call); the CA re-reads this file when it changes\n"+
		"time_zone: UTC\nrotations:\n  %s:\n    members: [%s, %s]\n    start: %s\n    shift: %s\n",
		oc.Rotation, oc.Members[0], oc.Members[1], oc.Start.Format("2006-01-02T15:04"), oc.Shift)
	if overrides != "" {
		s += "overrides:\n" + overrides
	}
	return s
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("append to %s: %w", path, err)
	}
	return f.Close()
}

// cmdHandover hands the pager to the next member now: an override in the
// schedule, which the running CA picks up, revoking the certificates the
// ended shift granted and ending their live sessions.
func cmdHandover(args []string) error {
	fs := cli.NewFlagSet("sshward-demo handover [--dir DIR]")
	dir := fs.String("dir", "", "demo directory (default: the newest one in the temp dir)")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	st, err := loadState(*dir)
	if err != nil {
		return err
	}
	oc := st.OnCall
	if oc == nil {
		return errors.New("this demo has no on-call rotation")
	}
	now := time.Now().UTC().Truncate(time.Minute)
	over := fmt.Sprintf("  - {rotation: %s, user: %s, start: %s, end: %s}\n", oc.Rotation, oc.Members[1],
		now.Format("2006-01-02T15:04"), oc.ShiftEnd.Add(time.Hour).Format("2006-01-02T15:04"))
	tmp := oc.Schedule + ".new"
	if err := os.WriteFile(tmp, []byte(oc.yaml(over)), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, oc.Schedule); err != nil {
		return err
	}
	fmt.Printf("%s carries the pager from %s UTC; %s's shift has ended: the CA revokes what it granted\n",
		oc.Members[1], now.Format("15:04"), oc.Members[0])
	return nil
}
