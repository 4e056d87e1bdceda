package main

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/cmd/internal/metricsrv"
)

// caMetrics is what `sshward-ca serve --metrics-listen` exposes besides
// the HTTP metrics: every audit event counted by type, tier and outcome
// (issuance by tier and outcome, logins and their refusals, approvals,
// revocations …), access requests pending, and the store's commits.
func caMetrics(db *store.DB) *prometheus.Registry {
	reg := metricsrv.NewRegistry()
	ac := &auditCollector{db: db, counts: map[[3]string]float64{}}
	// Count from the start: the head of the log now.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ac.after, _ = db.AuditHeadSeq(ctx)
	cancel()
	reg.MustRegister(ac)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sshward_ca", Name: "requests_pending",
		Help: "Access requests waiting for approvals."}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n := 0
		_ = db.View(ctx, func(tx *store.Tx) error {
			rs, err := tx.ListRequests(store.RequestFilter{States: []string{api.StatePending}})
			n = len(rs)
			return err
		})
		return float64(n)
	}))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "sshward_ca", Name: "store_commits_total",
		Help: "Store write transactions committed (each one fsync pair)."}, func() float64 { return float64(db.CommitStats().Commits) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "sshward_ca", Name: "store_updates_total",
		Help: "Store updates committed; updates/commits is the mean group-commit batch."}, func() float64 { return float64(db.CommitStats().Updates) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "sshward_ca", Name: "store_conflicts_total",
		Help: "Store transactions re-run because another CA replica committed first (etcd store; 0 on a file)."}, func() float64 { return float64(db.CommitStats().Conflicts) }))
	return reg
}

// auditCollector counts the audit events appended since the process
// started, reading the log incrementally at each scrape (the log is the
// one place every outcome is written, in one transaction with its effect).
type auditCollector struct {
	db *store.DB

	mu     sync.Mutex            // guards the fields below
	after  uint64                // the last record counted
	counts map[[3]string]float64 // type, tier, outcome
}

var auditDesc = prometheus.NewDesc("sshward_ca_audit_events_total",
	"Audit events since the CA started, by type (cert.issue, login, request.approve …), tier and outcome (ok, refused).",
	[]string{"type", "tier", "outcome"}, nil)

func (c *auditCollector) Describe(ch chan<- *prometheus.Desc) { ch <- auditDesc }

func (c *auditCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		evs, err := c.db.Audit(ctx, store.AuditFilter{AfterSeq: c.after, Limit: 10000})
		if err != nil || len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			outcome := ev.Outcome
			if outcome == "" {
				outcome = store.OutcomeOK
			}
			c.counts[[3]string{ev.Type, ev.Tier, outcome}]++
			c.after = ev.Seq
		}
	}
	for k, v := range c.counts {
		ch <- prometheus.MustNewConstMetric(auditDesc, prometheus.CounterValue, v, k[0], k[1], k[2])
	}
}
