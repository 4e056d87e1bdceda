package ca

import (
	"context"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// terminateLookBack is how many audit records a starting replica reads
// back for orders still valid.
const terminateLookBack = 20000

// DefaultTerminateSync is how often RunTerminateSync reads the audit log.
const DefaultTerminateSync = 500 * time.Millisecond

// RunTerminateSync hands this replica's agents the terminate orders other
// CA replicas signed (several CAs on one etcd cluster): each order is in
// its api.EventSessionTerminate audit record, and the audit log is shared.
// A single CA needs no sync (it publishes its own orders at once); run it
// where replicas share the store. Returns when ctx ends.
func (a *Authority) RunTerminateSync(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		every = DefaultTerminateSync
	}
	last, err := a.cfg.Store.AuditHeadSeq(ctx)
	if err != nil {
		return err
	}
	// Orders signed shortly before this replica started are still valid:
	// look back over the recent records once.
	if evs, err := a.cfg.Store.Audit(ctx, store.AuditFilter{AfterSeq: last - min(last, terminateLookBack), Type: api.EventSessionTerminate}); err == nil {
		a.syncTerminateOrders(evs)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		head, err := a.cfg.Store.AuditHeadSeq(ctx)
		if err != nil || head == last {
			continue
		}
		evs, err := a.cfg.Store.Audit(ctx, store.AuditFilter{AfterSeq: last, Type: api.EventSessionTerminate})
		if err != nil {
			continue
		}
		a.syncTerminateOrders(evs)
		last = head
		for _, e := range evs {
			last = max(last, e.Seq)
		}
	}
}

// syncTerminateOrders publishes the still-valid orders in evs.
func (a *Authority) syncTerminateOrders(evs []store.AuditEvent) {
	now := a.cfg.Now()
	for _, e := range evs {
		if e.Outcome != "ok" || e.Details["order_signature"] == "" {
			continue
		}
		issued, err1 := time.Parse(time.RFC3339Nano, e.Details["order_issued_at"])
		expires, err2 := time.Parse(time.RFC3339Nano, e.Details["order_expires"])
		if err1 != nil || err2 != nil || !now.Before(expires) {
			continue
		}
		a.terms.publish(api.TerminateOrder{SessionID: e.Subject, Host: e.Details["host"], Tier: e.Tier, By: e.Actor,
			Reason: e.Reason, IssuedAt: issued, Expires: expires, Nonce: e.Details["order_nonce"],
			Signature: e.Details["order_signature"]}, now)
	}
}
