package ca

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/oncall"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
)

// On-call entitlements (issue 12 §2). A tier with requires_oncall issues
// only to a user on call now; a tier with oncall_approvals waives
// approvals for the person on call. Either way the certificate "rests on
// the shift" (policy.Grant.OnCall): it expires at the shift's end at the
// latest, carries api.ExtOnCallUntil, and is recorded in the store's
// on-call grants. RunOnCall, a background loop on the CA's clock, revokes
// at each shift end every such certificate whose holder is off call, with
// a notice the agent shows on the live session and one audit event per
// shift ("oncall.shift_end": user, shift, serials). It starts from the
// store, so a CA that was down at the shift end revokes when it is back.

// EventOnCallShiftEnd is the audit event of a shift end that revoked
// certificates.
const EventOnCallShiftEnd = "oncall.shift_end"

// OnCallSchedule says who is on call: ca/oncall.File (a schedule file the
// CA reads), or any other source (an on-call plugin). An error makes
// issuance through on-call fail closed.
type OnCallSchedule interface {
	ShiftAt(ctx context.Context, user string, t time.Time) (oncall.Shift, bool, error)
}

// onCallGenerations is the optional change signal of an OnCallSchedule: a
// new value makes RunOnCall re-check every grant (oncall.File has it).
type onCallGenerations interface{ Generation() uint64 }

// Defaults of OnCallLoop.
const (
	DefaultOnCallTick      = time.Second
	DefaultOnCallResweep   = time.Minute
	DefaultOnCallSkewGrace = 5 * time.Minute
	onCallScheduleTimeout  = 5 * time.Second
)

// OnCallLoop tunes RunOnCall; the zero value is the defaults.
type OnCallLoop struct {
	// Tick is how often the CA clock is read to see whether a shift ended
	// (default 1s): the bound on how late a revocation is.
	Tick time.Duration
	// Resweep re-checks every grant this often even when no shift end is
	// due (default 1m), for schedule sources without a change signal.
	Resweep time.Duration
	// SkewGrace: a certificate that expired less than this ago is still
	// revoked at its shift's end, for hosts whose clock runs late (default
	// 5m).
	SkewGrace time.Duration
}

// onCallState is the loop's wake-up; the zero value is ready.
type onCallState struct {
	mu   sync.Mutex // guards kick
	kick chan struct{}
}

func (s *onCallState) wake() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kick == nil {
		s.kick = make(chan struct{}, 1)
	}
	return s.kick
}

// KickOnCall makes RunOnCall re-check every grant now (SIGHUP, a new grant).
func (a *Authority) KickOnCall() {
	select {
	case a.oncall.wake() <- struct{}{}:
	default:
	}
}

// checkOnCallConfig refuses a policy that needs a schedule without one.
func (c *Config) checkOnCallConfig() error {
	if c.OnCall != nil {
		return nil
	}
	for _, t := range c.Policy.Tiers {
		if t.UsesOnCall() {
			return fmt.Errorf("ca: tier %q uses the on-call schedule (requires_oncall or oncall_approvals) but Config.OnCall is nil: configure oncall_schedule", t.Name)
		}
	}
	return nil
}

// onCallNow asks the schedule whether user is on call at now, for a tier
// that uses it (nil, nil otherwise, and when off call).
func (a *Authority) onCallNow(ctx context.Context, user, tier string, now time.Time) (*policy.OnCall, error) {
	t, ok := a.cfg.Policy.Tier(tier)
	if !ok || !t.UsesOnCall() || a.cfg.OnCall == nil {
		return nil, nil
	}
	sctx, cancel := context.WithTimeout(ctx, onCallScheduleTimeout)
	defer cancel()
	sh, on, err := a.cfg.OnCall.ShiftAt(sctx, user, now)
	if err != nil {
		a.cfg.Logger.LogAttrs(ctx, slog.LevelError, "on-call schedule failed", slog.String("user", user), slog.String("err", err.Error()))
		return nil, refuse(api.CodeInternal, http.StatusServiceUnavailable, err,
			"the on-call schedule cannot be read, so tier %s is refused (fail closed): try again later or ask an administrator", tier)
	}
	if !on || !now.Before(sh.End) {
		return nil, nil
	}
	return &policy.OnCall{Rotation: sh.Rotation, Start: sh.Start, End: sh.End, Left: sh.End.Sub(now)}, nil
}

// requestApproved reports whether an access request counts as approved by
// people: as many approvals as the tier asks. A request approved by the
// on-call waiver alone (onCallRequest) does not: its certificate rests on
// the shift, which Grant checks again at issuance.
func (a *Authority) requestApproved(ar *store.AccessRequest) bool {
	if ar == nil {
		return false
	}
	t, ok := a.cfg.Policy.Tier(ar.Tier)
	return !ok || t.OnCallApprovals == nil || len(ar.Approvals) >= t.Approvals
}

// onCallDetails adds the shift to a cert.issue audit event.
func onCallDetails(ev *store.AuditEvent, g *policy.Grant) {
	if g.OnCall == nil {
		return
	}
	if ev.Details == nil {
		ev.Details = map[string]string{}
	}
	ev.Details["oncall_rotation"] = g.OnCall.Rotation
	ev.Details["oncall_shift_start"] = g.OnCall.Start.UTC().Format(time.RFC3339)
	ev.Details["oncall_shift_end"] = g.OnCall.End.UTC().Format(time.RFC3339)
}

// putOnCallGrant records a certificate that rests on a shift, inside its
// issuance transaction.
func putOnCallGrant(tx *store.Tx, g *policy.Grant, rec *store.CertRecord) error {
	if g.OnCall == nil {
		return nil
	}
	return tx.PutOnCallGrant(&store.OnCallGrant{Serial: rec.Serial, KeyID: rec.KeyID, Tier: rec.Tier, User: rec.Identity,
		Rotation: g.OnCall.Rotation, ShiftStart: g.OnCall.Start.UTC(), ShiftEnd: g.OnCall.End.UTC(), ValidBefore: rec.ValidBefore})
}

// onCallRequest applies the on-call waiver to a new access request: for a
// tier with oncall_approvals and a requester on call, the request needs
// that many approvals (plus what the approval policy added); at zero it is
// approved at once, until the shift ends at the latest.
func (a *Authority) onCallRequest(ctx context.Context, rec *store.AccessRequest, t *policy.Tier, extra int, now time.Time, ev *store.AuditEvent) error {
	if t.OnCallApprovals == nil {
		return nil
	}
	oc, err := a.onCallNow(ctx, rec.Requester, t.Name, now)
	if err != nil || oc == nil {
		return err
	}
	need := *t.OnCallApprovals + extra
	if need >= rec.ApprovalsNeeded {
		return nil
	}
	rec.ApprovalsNeeded = need
	ev.Details["oncall_rotation"] = oc.Rotation
	ev.Details["oncall_shift_end"] = oc.End.UTC().Format(time.RFC3339)
	if need == 0 {
		rec.State = api.StateApproved
		if oc.End.Before(rec.ExpiresAt) {
			rec.ExpiresAt = oc.End
		}
		ev.Details["approved_by"] = "on-call rotation " + oc.Rotation
		ev.Details["expires_at"] = rec.ExpiresAt.Format(time.RFC3339)
	}
	ev.Details["state"] = rec.State
	ev.Details["approvals_needed"] = strconv.Itoa(need)
	return nil
}

// RunOnCall revokes, until ctx ends, the certificates whose holder's
// on-call shift ended (see the top of this file). It returns at once when
// the CA has no schedule (Config.OnCall). Every CA replica may run it: the
// store transaction that revokes re-checks, so each certificate is revoked
// and audited once.
func (a *Authority) RunOnCall(ctx context.Context, o OnCallLoop) error {
	if a.cfg.OnCall == nil {
		return nil
	}
	if o.Tick <= 0 {
		o.Tick = DefaultOnCallTick
	}
	if o.Resweep <= 0 {
		o.Resweep = DefaultOnCallResweep
	}
	if o.SkewGrace <= 0 {
		o.SkewGrace = DefaultOnCallSkewGrace
	}
	gen := func() uint64 {
		if g, ok := a.cfg.OnCall.(onCallGenerations); ok {
			return g.Generation()
		}
		return 0
	}
	tick := time.NewTicker(o.Tick)
	defer tick.Stop()
	kick := a.oncall.wake()
	var (
		due       time.Time // the next shift end of a live grant; zero: none
		last      time.Time // of the last sweep
		seen      = gen()
		sweepNow  = true // at start: recompute from the store
		lastError string
	)
	for {
		if sweepNow {
			now := a.cfg.Now()
			next, err := a.sweepOnCall(ctx, now, o.SkewGrace)
			switch {
			case err != nil && ctx.Err() != nil:
				return nil
			case err != nil:
				// Retried at the next tick; certificates stay capped at
				// their shift's end meanwhile.
				if msg := err.Error(); msg != lastError {
					a.cfg.Logger.Error("on-call shift check failed", "err", err)
					lastError = msg
				}
				due = now.Add(o.Tick)
			default:
				lastError, due = "", next
			}
			last, sweepNow = now, false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
			sweepNow = true
		case <-tick.C:
			now := a.cfg.Now()
			g := gen()
			sweepNow = g != seen || (!due.IsZero() && !now.Before(due)) || now.Sub(last) >= o.Resweep || now.Before(last)
			seen = g
		}
	}
}

// shiftKey groups the grants one shift end revokes.
type shiftKey struct {
	user, rotation string
	start, end     time.Time
}

// sweepOnCall revokes the grants whose holder is off call at now and
// forgets those that expired; it returns the next shift end of a live
// grant (zero when there is none).
func (a *Authority) sweepOnCall(ctx context.Context, now time.Time, grace time.Duration) (time.Time, error) {
	var grants []store.OnCallGrant
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		grants, err = tx.OnCallGrants()
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("ca: on-call sweep: %w", err)
	}
	var (
		next    time.Time
		forget  []uint64
		revoke  = map[shiftKey][]store.OnCallGrant{}
		endedAt = map[shiftKey]time.Time{}
	)
	for _, g := range grants {
		if !now.Before(g.ValidBefore.Add(grace)) {
			forget = append(forget, g.Serial) // expired everywhere, skew included
			continue
		}
		if g.Notice != "" {
			continue // revoked at its shift's end; kept for its notice
		}
		sctx, cancel := context.WithTimeout(ctx, onCallScheduleTimeout)
		sh, on, err := a.cfg.OnCall.ShiftAt(sctx, g.User, now)
		cancel()
		if err != nil {
			return time.Time{}, fmt.Errorf("ca: on-call sweep: schedule: %w", err)
		}
		// Still on call in the shift that granted it (or its extension):
		// come back when that shift ends.
		if on && now.Before(sh.End) && !sh.Start.After(g.ShiftEnd) {
			if next.IsZero() || sh.End.Before(next) {
				next = sh.End
			}
			continue
		}
		k := shiftKey{user: g.User, rotation: g.Rotation, start: g.ShiftStart, end: g.ShiftEnd}
		revoke[k] = append(revoke[k], g)
		// A shift cut short by a schedule edit ended when the CA noticed.
		endedAt[k] = g.ShiftEnd
		if now.Before(g.ShiftEnd) {
			endedAt[k] = now.UTC()
		}
	}
	if len(revoke) == 0 && len(forget) == 0 {
		return next, nil
	}
	keys := make([]shiftKey, 0, len(revoke))
	for k := range revoke {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y shiftKey) int { return strings.Compare(x.user, y.user) })
	type ended struct {
		k       shiftKey
		serials []uint64
	}
	var done []ended
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		done = done[:0]
		for _, serial := range forget {
			if err := tx.DeleteOnCallGrant(serial); err != nil {
				return err
			}
		}
		for _, k := range keys {
			end := endedAt[k]
			notice := api.OnCallEndedMessage(end)
			reason := fmt.Sprintf("on-call shift of %s ended at %s", k.user, end.UTC().Format(time.RFC3339))
			var serials []uint64
			for _, g := range revoke[k] {
				if tx.IsRevoked(g.Tier, g.Serial) {
					continue // revoked already (an administrator, or an earlier sweep)
				}
				r := store.Revocation{Tier: g.Tier, Serial: g.Serial, KeyID: g.KeyID, Reason: reason, At: now.UTC(), By: systemActor, Notice: notice}
				if err := tx.AddRevocation(&r); err != nil {
					return err
				}
				if err := a.appendAudit(tx, store.AuditEvent{Type: "revoke", Time: now.UTC(), Actor: systemActor, Subject: g.User, Tier: g.Tier,
					Serial: g.Serial, KeyID: g.KeyID, Outcome: store.OutcomeOK, Reason: reason}); err != nil {
					return err
				}
				serials = append(serials, g.Serial)
			}
			for _, g := range revoke[k] {
				// Revoked here: keep the record, with the notice that
				// revocation lists carry, until the certificate is
				// expired everywhere. Revoked by someone else: forget it.
				if !slices.Contains(serials, g.Serial) {
					if err := tx.DeleteOnCallGrant(g.Serial); err != nil {
						return err
					}
					continue
				}
				g.Notice = notice
				if err := tx.PutOnCallGrant(&g); err != nil {
					return err
				}
			}
			if len(serials) == 0 {
				continue
			}
			strs := make([]string, len(serials))
			for i, s := range serials {
				strs[i] = strconv.FormatUint(s, 10)
			}
			err := a.appendAudit(tx, store.AuditEvent{Type: EventOnCallShiftEnd, Time: now.UTC(), Actor: systemActor, Subject: k.user,
				Tier: revoke[k][0].Tier, Outcome: store.OutcomeOK, Reason: reason,
				Details: map[string]string{
					"rotation": k.rotation, "shift_start": k.start.UTC().Format(time.RFC3339), "shift_end": k.end.UTC().Format(time.RFC3339),
					"ended_at": end.UTC().Format(time.RFC3339), "serials": strings.Join(strs, ","), "certs_revoked": strconv.Itoa(len(serials)),
				}})
			if err != nil {
				return err
			}
			done = append(done, ended{k, serials})
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("ca: on-call sweep: revoke: %w", err)
	}
	if len(done) > 0 {
		a.revs.publish()
	}
	for _, d := range done {
		a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "on-call shift ended: certificates revoked", slog.String("user", d.k.user),
			slog.String("rotation", d.k.rotation), slog.Time("shift_end", d.k.end), slog.Any("serials", d.serials))
	}
	return next, nil
}

// addOnCallNotices adds to a host tier's revocation list the notices of the
// on-call certificates it revokes (api.RevocationList.Notices), so that a
// host that learns of the revocation by polling or from a snapshot, not
// from the stream, still tells the user why.
func (a *Authority) addOnCallNotices(tx *store.Tx, out *api.RevocationList) error {
	if a.cfg.OnCall == nil {
		return nil
	}
	grants, err := tx.OnCallGrants()
	if err != nil {
		return err
	}
	trusted := a.cfg.Policy.HostTrust(out.Tier)
	for _, g := range grants {
		if g.Notice == "" || !slices.Contains(trusted, g.Tier) {
			continue
		}
		if out.Notices == nil {
			out.Notices = map[uint64]string{}
		}
		out.Notices[g.Serial] = g.Notice
	}
	return nil
}
