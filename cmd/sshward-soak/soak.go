package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Bounds of the phases after the load.
const (
	drainLimit    = 3 * time.Minute // spools empty
	listLimit     = 2 * time.Minute // no session live on the playback server
	maxLostDetail = 20              // lost or broken sessions named in the summary
)

// soak sets the system up, runs load and faults for cfg.Duration, drains
// and counts.
func soak(ctx context.Context, cfg config, stderr io.Writer) (*summary, error) {
	status := func(format string, args ...any) { fmt.Fprintf(stderr, "soak: "+format+"\n", args...) }
	t0 := time.Now()
	sum := &summary{Seed: cfg.Seed, Duration: cfg.Duration.String(), Dir: cfg.Dir, LoadBefore: loadavg()}
	s, err := setup(ctx, cfg, status)
	if s != nil {
		defer s.cleanup(context.WithoutCancel(ctx))
		defer s.stopAll()
	}
	if s != nil {
		sum.Notes = s.notes
		for _, n := range s.notes {
			status("%s", n)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("setting the system up: %w", err)
	}

	status("system up in %v", time.Since(t0).Round(time.Second))
	ld := newLoad(s)
	in := newInjector(cfg, s, ld.busy)
	loadCtx, stopLoad := context.WithTimeout(ctx, cfg.Duration)
	defer stopLoad()
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { ld.run(loadCtx, ctx, cfg.Seed) })
	wg.Go(func() { in.run(loadCtx) })
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(cfg.StatusGap)
		defer t.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-t.C:
				fmt.Fprintln(stderr, progressLine(time.Since(start), cfg.Duration, ld.stats(), in))
			}
		}
	}()
	wg.Wait()
	<-progressDone
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fmt.Fprintln(stderr, progressLine(time.Since(start), cfg.Duration, ld.stats(), in))

	status("load and faults over; draining the agents' spools (at most %v)", drainLimit)
	drainStart := time.Now()
	for _, p := range append([]*proc{s.ca, s.playback}, agentProcs(s)...) {
		if !p.running() { // a failed restart: try once more so that the drain can happen
			p.start(ctx)
		}
	}
	sum.Undrained = s.drainSpools(ctx, drainLimit)
	recs, err := s.recordings(ctx, listLimit)
	sum.Drain = time.Since(drainStart).Round(time.Second).String()
	if err != nil {
		sum.Problems = append(sum.Problems, err.Error())
	}
	ld.mu.Lock()
	sessions := slices.Clone(ld.sessions)
	ld.mu.Unlock()
	sum.count(sessions, recs)

	status("stopping the servers; checking the audit logs and what the CA stored")
	s.stopAll()
	sum.Audit.CA = s.auditVerify(ctx, "sshward-ca", s.caDir)
	sum.Audit.Playback = s.auditVerify(ctx, "sshward-playback", s.pbDir)
	serials, approvals, err := s.stored(ctx)
	if err != nil {
		sum.Problems = append(sum.Problems, err.Error())
	}
	ld.mu.Lock()
	sum.Issuances.Acknowledged, sum.Issuances.Failed = len(ld.certsAck), ld.certsFail
	for serial := range ld.certsAck {
		if serials[serial] {
			sum.Issuances.Stored++
		} else {
			sum.Issuances.Missing = append(sum.Issuances.Missing, serial)
		}
	}
	sum.Approvals.Requests, sum.Approvals.Acknowledged, sum.Approvals.GivenUp = ld.requests, len(ld.approvals), ld.bgFail
	sum.Approvals.GivenUpWhy = ld.bgWhy
	for k := range ld.approvals {
		if approvals[k] {
			sum.Approvals.Stored++
		} else {
			sum.Approvals.Missing = append(sum.Approvals.Missing, k)
		}
	}
	sum.Logins.OK, sum.Logins.Failed = ld.logins+len(s.people()), ld.loginFail
	ld.mu.Unlock()
	counts, _, errs := in.snapshot()
	sum.Faults = counts
	sum.FaultErrors = errs
	sum.LoadAfter = loadavg()
	return sum, nil
}

func agentProcs(s *system) []*proc {
	var ps []*proc
	for _, a := range s.agents {
		ps = append(ps, a.proc)
	}
	return ps
}

// progressLine is the status line printed every --status-every; it fits
// an 80-column terminal up to three-digit counts. The fault in effect has
// a star.
func progressLine(elapsed, total time.Duration, st loadStats, in *injector) string {
	counts, current, errs := in.snapshot()
	var f strings.Builder
	for _, k := range allFaults {
		if n := counts[k]; n > 0 {
			fmt.Fprintf(&f, " %s%d", faultAbbrev[k], n)
			if k == current {
				f.WriteString("*")
			}
		}
	}
	line := fmt.Sprintf("[%s/%s] ssh %d (%d live) certs %d bg %d | faults%s",
		elapsed.Round(time.Second), total, st.started, st.running, st.certs, st.requests, f.String())
	if len(errs) > 0 {
		line += fmt.Sprintf(" | %d RECOVERIES FAILED", len(errs))
	}
	return line
}

var faultAbbrev = map[string]string{faultPlaybackKill: "pb", faultAgentKill: "ag", faultCARestart: "ca", faultDiskFull: "disk", faultNetCut: "net"}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// summary is what the soak prints at the end (--json: this object).
type summary struct {
	Seed     uint64 `json:"seed"`
	Duration string `json:"duration"`
	Drain    string `json:"drain"`
	Dir      string `json:"dir"`
	// Sessions: ssh clients started; acknowledged ones printed at least
	// one marker line; finished printed all of them and exited 0; cut
	// printed some but not all (a fault ended them); refused printed none.
	Sessions struct {
		Started      int      `json:"started"`
		Acknowledged int      `json:"acknowledged"`
		Finished     int      `json:"finished"`
		Cut          int      `json:"cut"`
		Refused      int      `json:"refused"`
		BreakGlass   int      `json:"break_glass"`
		RefusedWhy   []string `json:"refused_why,omitempty"`
	} `json:"sessions"`
	// Recordings, one verdict per acknowledged session: complete (the
	// recording is marked complete, verifies, and holds every marker line
	// the client printed, once), complete_cut (the recording was ended early,
	// by the agent's repair after kill -9 or by the closed tier when the
	// spool failed, and still verifies and holds every line the client
	// printed, once), lost, corrupted, duplicate.
	Recordings struct {
		Total       int      `json:"total"`
		Complete    int      `json:"complete"`
		CompleteCut int      `json:"complete_cut"`
		Lost        int      `json:"lost"`
		Corrupted   int      `json:"corrupted"`
		Duplicate   int      `json:"duplicate"`
		Unmatched   int      `json:"without_client_output"`
		Detail      []string `json:"detail,omitempty"`
	} `json:"recordings"`
	Issuances struct {
		Acknowledged int      `json:"acknowledged"`
		Stored       int      `json:"stored"`
		Missing      []uint64 `json:"missing,omitempty"`
		Failed       int      `json:"failed"`
	} `json:"issuances"`
	Approvals struct {
		Requests     int      `json:"requests"`
		Acknowledged int      `json:"acknowledged"`
		Stored       int      `json:"stored"`
		Missing      []string `json:"missing,omitempty"`
		GivenUp      int      `json:"break_glass_given_up"`
		GivenUpWhy   []string `json:"break_glass_given_up_why,omitempty"`
	} `json:"approvals"`
	Logins struct {
		OK     int `json:"ok"`
		Failed int `json:"failed"`
	} `json:"logins"`
	Audit struct {
		CA       auditResult `json:"ca"`
		Playback auditResult `json:"playback"`
	} `json:"audit"`
	Faults      map[string]int `json:"faults"`
	FaultErrors []string       `json:"fault_errors,omitempty"`
	Undrained   []string       `json:"undrained,omitempty"`
	Problems    []string       `json:"problems,omitempty"`
	Notes       []string       `json:"notes,omitempty"`
	LoadBefore  string         `json:"loadavg_before"`
	LoadAfter   string         `json:"loadavg_after"`
}

// count gives every acknowledged client session one verdict against the
// recordings, and checks every recording's integrity.
func (sum *summary) count(sessions []*clientSession, recs []*recording) {
	byTag := map[string][]*recording{}
	r := &sum.Recordings
	r.Total = len(recs)
	matched := map[*recording]bool{}
	for _, rec := range recs {
		for tag := range rec.lines {
			byTag[tag] = append(byTag[tag], rec)
		}
	}
	detail := func(format string, args ...any) {
		if len(r.Detail) < maxLostDetail {
			r.Detail = append(r.Detail, fmt.Sprintf(format, args...))
		}
	}
	for _, cs := range sessions {
		ss := &sum.Sessions
		ss.Started++
		if cs.Tier == "break-glass" {
			ss.BreakGlass++
		}
		switch {
		case len(cs.Seen) == 0:
			ss.Refused++
			if len(ss.RefusedWhy) < 3 {
				ss.RefusedWhy = append(ss.RefusedWhy, fmt.Sprintf("%s on %s at %s: %s", cs.Tag, cs.Host, cs.Start.UTC().Format(time.TimeOnly), cs.Err))
			}
			continue
		case len(cs.Seen) == cs.Lines && cs.Err == "":
			ss.Finished++
		default:
			ss.Cut++
		}
		ss.Acknowledged++
		found := byTag[cs.Tag]
		for _, rec := range found {
			matched[rec] = true
		}
		switch {
		case len(found) == 0:
			r.Lost++
			detail("lost: %s on %s (%s): the client printed %d lines, no recording holds any (ssh: %s)", cs.Tag, cs.Host, cs.Tier, len(cs.Seen), cs.Err)
		case len(found) > 1:
			r.Duplicate++
			detail("duplicate: %s on %s is in %d recordings", cs.Tag, cs.Host, len(found))
		case found[0].problem != "" || found[0].Integrity != "verified":
			r.Corrupted++
			detail("corrupted: %s (recording %s, integrity %q): %s", cs.Tag, found[0].ID, found[0].Integrity, found[0].problem)
		default:
			rec := found[0]
			var missing []int
			dup := false
			for n := range cs.Seen {
				if rec.lines[cs.Tag][n] == 0 {
					missing = append(missing, n)
				}
			}
			for _, c := range rec.lines[cs.Tag] {
				dup = dup || c > 1
			}
			sort.Ints(missing)
			switch {
			case len(missing) > 0:
				r.Lost++
				detail("lost: %s on %s (%s): recording %s lacks lines %v the client printed (ssh: %s)", cs.Tag, cs.Host, cs.Tier, rec.ID, missing, cs.Err)
			case dup:
				r.Duplicate++
				detail("duplicate: recording %s of %s holds a marker line twice", rec.ID, cs.Tag)
			case rec.Complete:
				r.Complete++
			default:
				r.CompleteCut++
			}
		}
	}
	for _, rec := range recs {
		if matched[rec] {
			continue
		}
		r.Unmatched++
		if rec.problem != "" || rec.Integrity != "verified" {
			r.Corrupted++
			detail("corrupted: recording %s on %s (integrity %q): %s", rec.ID, rec.Host, rec.Integrity, rec.problem)
		}
	}
}

// verdict is nil when nothing was lost and every check passed.
func (sum *summary) verdict() error {
	r := sum.Recordings
	switch {
	case r.Lost > 0, r.Corrupted > 0, r.Duplicate > 0,
		len(sum.Issuances.Missing) > 0, len(sum.Approvals.Missing) > 0,
		!sum.Audit.CA.OK, !sum.Audit.Playback.OK,
		len(sum.FaultErrors) > 0, len(sum.Undrained) > 0, len(sum.Problems) > 0:
		return errFailed
	case sum.Sessions.Acknowledged == 0:
		return fmt.Errorf("no session printed anything: nothing was tested")
	}
	return nil
}

// print writes the summary for a terminal.
func (sum *summary) print(w io.Writer) {
	s, r := sum.Sessions, sum.Recordings
	fmt.Fprintf(w, "\nsshward soak: seed %d, %s of load and faults, drained in %s (load average %s → %s)\n", sum.Seed, sum.Duration, sum.Drain, sum.LoadBefore, sum.LoadAfter)
	fmt.Fprintf(w, "  sessions     %d started: %d acknowledged (%d finished, %d cut by a fault), %d refused; %d break-glass\n",
		s.Started, s.Acknowledged, s.Finished, s.Cut, s.Refused, s.BreakGlass)
	fmt.Fprintf(w, "  recordings   %d complete, %d complete up to a cut, %d lost, %d corrupted, %d duplicate (%d on the server, %d without client output)\n",
		r.Complete, r.CompleteCut, r.Lost, r.Corrupted, r.Duplicate, r.Total, r.Unmatched)
	fmt.Fprintf(w, "  issuances    %d acknowledged, %d stored, %d missing (%d attempts failed during faults)\n",
		sum.Issuances.Acknowledged, sum.Issuances.Stored, len(sum.Issuances.Missing), sum.Issuances.Failed)
	fmt.Fprintf(w, "  approvals    %d requests, %d approvals acknowledged, %d stored, %d missing (%d break-glass attempts given up)\n",
		sum.Approvals.Requests, sum.Approvals.Acknowledged, sum.Approvals.Stored, len(sum.Approvals.Missing), sum.Approvals.GivenUp)
	fmt.Fprintf(w, "  logins       %d ok, %d failed\n", sum.Logins.OK, sum.Logins.Failed)
	fmt.Fprintf(w, "  audit        CA %s, playback %s\n", sum.Audit.CA.say(), sum.Audit.Playback.say())
	var f []string
	for _, k := range allFaults {
		f = append(f, fmt.Sprintf("%s %d", k, sum.Faults[k]))
	}
	fmt.Fprintf(w, "  faults       %s\n", strings.Join(f, ", "))
	for _, why := range s.RefusedWhy {
		fmt.Fprintf(w, "  · refused %s\n", why)
	}
	for _, l := range [][]string{sum.Notes, sum.FaultErrors, sum.Undrained, sum.Problems, r.Detail} {
		for _, x := range l {
			fmt.Fprintf(w, "  ! %s\n", x)
		}
	}
	if len(sum.Issuances.Missing) > 0 {
		fmt.Fprintf(w, "  ! acknowledged certificates the CA did not store: %v\n", sum.Issuances.Missing)
	}
	if len(sum.Approvals.Missing) > 0 {
		fmt.Fprintf(w, "  ! acknowledged approvals the CA did not store: %v\n", sum.Approvals.Missing)
	}
	verdict := "PASS: nothing lost"
	if err := sum.verdict(); err != nil {
		verdict = "FAIL: " + err.Error()
	}
	fmt.Fprintf(w, "  %s\n", verdict)
}

func (a auditResult) say() string {
	if a.OK {
		return fmt.Sprintf("intact (%d records)", a.Records)
	}
	return "BROKEN: " + a.Error
}
