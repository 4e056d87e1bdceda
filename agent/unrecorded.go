package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// An open tier's unrecorded session reaches someone (DESIGN.md
// "Recording": open tiers continue and raise an alert). When recording
// fails on a tier that fails open, the session goes on, and:
//
//   - the user reads unrecordedBanner on the session's stderr;
//   - a report (api.UnrecordedSession) is written to DataDir/unrecorded,
//     fsynced, before anything else, then delivered to the CA's audit log
//     (POST /v1/host/unrecorded) and to the playback server's
//     (POST /v1/ingest/{id}/unrecorded), both with the host certificate;
//     each destination is retried every Config.UnrecordedRetry until it
//     answered, across restarts;
//   - `sshward-agent status` counts them and lists the last ones.
//
// Should the data directory be unwritable too (its disk is the spool's), the
// report is kept in memory, delivered all the same, and written once the
// disk takes it again.

// dirUnrecorded holds one JSON file (UnrecordedRecord) per report, named by
// its event id.
const dirUnrecorded = "unrecorded"

// keepSettled is how many delivered (or given up) reports stay on disk for
// `sshward-agent status`; undelivered ones are never removed.
const keepSettled = 1000

// DefaultUnrecordedRetry is the default of Config.UnrecordedRetry.
const DefaultUnrecordedRetry = 10 * time.Second

// unrecordedTimeout bounds one delivery attempt.
const unrecordedTimeout = 10 * time.Second

// unrecordedBanner is what the user reads when the session goes on
// unrecorded.
func unrecordedBanner(reason string) string {
	return "sshward: this session is NOT being recorded: " + reason + ". Its tier lets it go on; the CA and the auditors are told.\r\n"
}

// unrecordedReason is the short, user-facing reason for err: what failed,
// never a path or an internal message.
func unrecordedReason(err error) string {
	switch {
	case errors.Is(err, errRecorderBehind):
		return "the recorder of this host could not keep up, and part of the output is missing from the recording"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "the recording disk of this host is full"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		return "the recording spool of this host is not writable"
	}
	return "the recording spool of this host failed"
}

// UnrecordedRecord is one report and where it has reached.
type UnrecordedRecord struct {
	Event    api.UnrecordedSession `json:"event"`
	CA       Delivery              `json:"ca"`
	Playback Delivery              `json:"playback"`
}

// Delivery is the state of a report at one destination.
type Delivery struct {
	// DeliveredAt is when the destination answered that it recorded it.
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	// NotDelivered says why it never will be (the destination refused it,
	// or there is no such destination); it is not retried.
	NotDelivered string `json:"not_delivered,omitempty"`
	Attempts     int    `json:"attempts,omitempty"`
	LastError    string `json:"last_error,omitempty"`
}

// Settled reports whether nothing is left to do for this destination.
func (d Delivery) Settled() bool { return !d.DeliveredAt.IsZero() || d.NotDelivered != "" }

func (r *UnrecordedRecord) settled() bool { return r.CA.Settled() && r.Playback.Settled() }

// unrecordedOutbox keeps the reports on disk until every destination has
// them.
type unrecordedOutbox struct {
	dir  string
	rnd  io.Reader
	log  *slog.Logger
	wake chan struct{} // a token when a report was added

	mu      sync.Mutex // guards the fields below
	pending map[string]*UnrecordedRecord
	unsaved map[string]bool // reports whose file could not be written yet
}

// openUnrecorded loads the reports of dataDir that are not delivered yet
// and drops the oldest delivered ones beyond keepSettled.
func openUnrecorded(dataDir string, rnd io.Reader, log *slog.Logger) (*unrecordedOutbox, error) {
	o := &unrecordedOutbox{dir: filepath.Join(dataDir, dirUnrecorded), rnd: rnd, log: log,
		wake: make(chan struct{}, 1), pending: map[string]*UnrecordedRecord{}, unsaved: map[string]bool{}}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: unrecorded-session reports: %w", err)
	}
	recs, err := readUnrecorded(o.dir)
	if err != nil {
		return nil, err
	}
	var settled []*UnrecordedRecord
	for _, r := range recs {
		if r.settled() {
			settled = append(settled, r)
		} else {
			o.pending[r.Event.EventID] = r
		}
	}
	if len(settled) > keepSettled {
		for _, r := range settled[:len(settled)-keepSettled] { // oldest first
			if err := os.Remove(filepath.Join(o.dir, r.Event.EventID+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
				log.Warn("agent: cannot prune an old unrecorded-session report", "err", err)
			}
		}
	}
	return o, nil
}

// readUnrecorded reads every report in dir, oldest first. Unreadable files
// are skipped (a torn one cannot exist: they are written atomically).
func readUnrecorded(dir string) ([]*UnrecordedRecord, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("agent: unrecorded-session reports: %w", err)
	}
	var out []*UnrecordedRecord
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		var r UnrecordedRecord
		if json.Unmarshal(data, &r) != nil || r.Event.EventID+".json" != filepath.Base(n) {
			continue
		}
		out = append(out, &r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Event.At.Before(out[j].Event.At) })
	return out, nil
}

// add queues a report: written to disk (fsynced) before it returns, or kept
// in memory when the disk refuses, and the delivery loop is woken.
func (o *unrecordedOutbox) add(ev api.UnrecordedSession, noPlayback string) {
	r := &UnrecordedRecord{Event: ev}
	r.Playback.NotDelivered = noPlayback
	o.mu.Lock()
	o.pending[ev.EventID] = r
	o.saveLocked(r)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// saveLocked writes r's file; a failure leaves r marked unsaved, to be
// written again on the next round.
func (o *unrecordedOutbox) saveLocked(r *UnrecordedRecord) {
	id := r.Event.EventID
	data, err := json.MarshalIndent(r, "", "  ")
	if err == nil {
		err = writeFileAtomic(filepath.Join(o.dir, id+".json"), append(data, '\n'), o.rnd)
	}
	if err != nil {
		if !o.unsaved[id] {
			o.log.Error("agent: cannot write an unrecorded-session report to disk; keeping it in memory and retrying",
				"session_id", r.Event.SessionID, "err", err)
		}
		o.unsaved[id] = true
		return
	}
	delete(o.unsaved, id)
}

// snapshot copies the reports still to deliver.
func (o *unrecordedOutbox) snapshot() []UnrecordedRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]UnrecordedRecord, 0, len(o.pending))
	for _, r := range o.pending {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Event.At.Before(out[j].Event.At) })
	return out
}

// update stores r's new state (and writes its file); a settled report
// leaves the queue.
func (o *unrecordedOutbox) update(r UnrecordedRecord) {
	o.mu.Lock()
	defer o.mu.Unlock()
	cur := &r
	o.pending[r.Event.EventID] = cur
	o.saveLocked(cur)
	if cur.settled() && !o.unsaved[r.Event.EventID] {
		delete(o.pending, r.Event.EventID)
	}
}

// retryUnsaved writes again the files the disk refused before; a settled
// report leaves the queue once written.
func (o *unrecordedOutbox) retryUnsaved() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for id := range o.unsaved {
		r := o.pending[id]
		o.saveLocked(r)
		if r.settled() && !o.unsaved[id] {
			delete(o.pending, id)
		}
	}
}

// unrecordedReporter is the part of the CA client that takes reports of
// unrecorded sessions (ca/client.Client).
type unrecordedReporter interface {
	ReportUnrecorded(ctx context.Context, ev api.UnrecordedSession, cert *ssh.Certificate, signer ssh.Signer) (*api.UnrecordedReceived, error)
}

// deliverUnrecorded delivers the outbox until ctx ends: at once when a
// report is added, and every Config.UnrecordedRetry while any is left.
func (s *Server) deliverUnrecorded(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.unrec.wake:
		case <-t.C:
		}
		s.unrec.retryUnsaved()
		for _, r := range s.unrec.snapshot() {
			if ctx.Err() != nil {
				return
			}
			changed := false
			if !r.CA.Settled() {
				s.deliverTo(ctx, &r.CA, r.Event, "CA", s.reportUnrecordedCA)
				changed = true
			}
			if !r.Playback.Settled() {
				s.deliverTo(ctx, &r.Playback, r.Event, "playback", s.reportUnrecordedPlayback)
				changed = true
			}
			if changed {
				s.unrec.update(r)
			}
		}
		t.Reset(s.cfg.UnrecordedRetry)
	}
}

// deliverTo makes one attempt at one destination and records its outcome
// in d.
func (s *Server) deliverTo(ctx context.Context, d *Delivery, ev api.UnrecordedSession, dest string, send func(context.Context, api.UnrecordedSession) error) {
	actx, cancel := context.WithTimeout(ctx, unrecordedTimeout)
	err := send(actx, ev)
	cancel()
	if ctx.Err() != nil {
		return // stopping: not an attempt
	}
	d.Attempts++
	var final *finalError
	switch {
	case err == nil:
		d.DeliveredAt, d.LastError = s.cfg.Now().UTC(), ""
		s.log.Info("agent: unrecorded session reported", "to", dest, "session_id", ev.SessionID, "attempts", d.Attempts)
	case errors.As(err, &final):
		d.NotDelivered, d.LastError = final.msg, ""
		s.log.Error("agent: ALERT an unrecorded-session report was refused; it is not sent again", "alert", true,
			"to", dest, "session_id", ev.SessionID, "reason", final.msg)
	default:
		d.LastError = oneLine(err.Error())
		s.log.Warn("agent: cannot report an unrecorded session yet; retrying", "to", dest,
			"session_id", ev.SessionID, "attempts", d.Attempts, "err", err)
	}
}

// finalError is a destination's refusal: sending again would not help.
type finalError struct{ msg string }

func (e *finalError) Error() string { return e.msg }

// reportUnrecordedCA sends ev to the CA.
func (s *Server) reportUnrecordedCA(ctx context.Context, ev api.UnrecordedSession) error {
	rep, ok := s.cfg.CA.(unrecordedReporter)
	if !ok {
		return &finalError{"the CA client cannot report unrecorded sessions"}
	}
	id := s.identity()
	_, err := rep.ReportUnrecorded(ctx, ev, id.cert, id.key)
	var ae *api.Error
	if errors.As(err, &ae) && refusedForGood(ae.Status, ae.Code) {
		return &finalError{fmt.Sprintf("refused by the CA (%d %s): %s", ae.Status, ae.Code, oneLine(ae.Message))}
	}
	return err
}

// refusedForGood reports whether an HTTP answer refuses a report for good:
// a 4xx other than authentication (a host certificate being renewed),
// timeouts and rate limits.
func refusedForGood(status int, code string) bool {
	return status/100 == 4 && status != 401 && status != 408 && status != 429 && code != api.CodeUnauthenticated
}

// unrecordedEvent builds the report of session s going on unrecorded.
func (s *session) unrecordedEvent(phase string, err error, command string) (api.UnrecordedSession, error) {
	g := s.c.g
	id, idErr := s.c.srv.newID()
	if idErr != nil {
		return api.UnrecordedSession{}, idErr
	}
	// Every field fits api.UnrecordedSession.Check: a report the CA
	// refused as malformed would be an alert lost.
	return api.UnrecordedSession{
		EventID: id, SessionID: s.id, Identity: fit(g.identity, 512), Principal: fit(g.login, 256), Host: fit(s.c.srv.cfg.HostName, 256),
		Tier: g.tier, Serial: g.cert.Serial, KeyID: fit(g.cert.KeyId, 1024), ClientAddr: fit(g.clientAddr, 256), Command: fit(command, 4096),
		Phase: phase, Reason: unrecordedReason(err), Error: fit(oneLine(s.c.srv.redact.String(err.Error())), 2048),
		At: s.c.srv.cfg.Now().UTC(),
	}, nil
}

// fit makes s valid UTF-8 of at most n bytes, marking a cut with "…".
func fit(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-len("…")], "") + "…"
}

// reportUnrecorded queues the report of this session going on unrecorded
// and audits it locally. It returns the user-facing reason.
func (s *session) reportUnrecorded(phase string, err error, command string) string {
	ev, idErr := s.unrecordedEvent(phase, err, command)
	if idErr != nil {
		s.log.Error("agent: ALERT cannot report an unrecorded session", "alert", true, "err", idErr)
		return unrecordedReason(err)
	}
	noPlayback := ""
	if s.c.srv.cfg.Playback == nil {
		noPlayback = "no playback server configured"
	}
	s.c.srv.unrec.add(ev, noPlayback)
	s.log.Error("agent: ALERT session goes on unrecorded (tier fails open); reporting it to the CA and the playback server",
		"alert", true, "phase", phase, "reason", ev.Reason, "event_id", ev.EventID)
	s.c.srv.audit(context.WithoutCancel(s.ctx), s.auditEvent(AuditSessionUnrecorded, ev.Reason, phase))
	return ev.Reason
}

// UnrecordedStatus sums up the reports of unrecorded sessions for
// `sshward-agent status`.
type UnrecordedStatus struct {
	// Count is the number of reports kept: every one not delivered yet,
	// and the last 1000 delivered.
	Count           int `json:"count"`
	PendingCA       int `json:"pending_ca"`
	PendingPlayback int `json:"pending_playback"`
	// Last are the newest reports, newest first (at most 20).
	Last []UnrecordedRecord `json:"last"`
}

// readUnrecordedStatus reads the reports in dataDir.
func readUnrecordedStatus(dataDir string) (*UnrecordedStatus, error) {
	recs, err := readUnrecorded(filepath.Join(dataDir, dirUnrecorded))
	if err != nil {
		return nil, err
	}
	st := &UnrecordedStatus{Count: len(recs), Last: []UnrecordedRecord{}}
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if !r.CA.Settled() {
			st.PendingCA++
		}
		if !r.Playback.Settled() {
			st.PendingPlayback++
		}
		if len(st.Last) < 20 {
			st.Last = append(st.Last, *r)
		}
	}
	return st, nil
}

// describe says where a report is, for the status table.
func (d Delivery) describe() string {
	switch {
	case !d.DeliveredAt.IsZero():
		return "delivered"
	case d.NotDelivered != "":
		return "not delivered: " + d.NotDelivered
	case d.LastError != "":
		return fmt.Sprintf("pending (%d attempts: %s)", d.Attempts, d.LastError)
	}
	return "pending"
}
