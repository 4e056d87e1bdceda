package main

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sshward/sshward/agent"
	"github.com/sshward/sshward/cmd/internal/metricsrv"
)

// agentMetrics is what `sshward-agent --metrics-listen` exposes: sessions
// and connections open, the spool and the upload queue (bytes, recordings,
// age of the oldest), unrecorded-session reports not delivered yet, the
// revocation list's age, host certificate expiry, and the pre-auth
// counters. The spool figures come from the status `sshward-agent status`
// reads, at scrape time.
func agentMetrics(srv *agent.Server, dataDir string, now func() time.Time) *prometheus.Registry {
	reg := metricsrv.NewRegistry()
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sshward_agent", Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "sshward_agent", Name: name, Help: help}, f))
	}
	gauge("sessions", "Session channels open now.", func() float64 { _, n := srv.Sessions(); return float64(n) })
	gauge("connections", "Authenticated SSH connections open now.", func() float64 { n, _ := srv.Sessions(); return float64(n) })
	// One read of the data directory serves every gauge of a scrape (the
	// registry calls them one after another): reread after a second.
	var mu sync.Mutex
	var cached *agent.Status
	var readAt time.Time
	status := func() *agent.Status {
		mu.Lock()
		defer mu.Unlock()
		if cached == nil || now().Sub(readAt) > time.Second || now().Before(readAt) {
			st, err := agent.ReadStatus(dataDir, now())
			if err != nil {
				st = &agent.Status{}
			}
			cached, readAt = st, now()
		}
		return cached
	}
	gauge("spool_bytes", "Bytes of recordings in the spool (live and waiting to ship).", func() float64 { return float64(status().Spool.Bytes) })
	gauge("spool_recordings", "Recordings in the spool, live or waiting to ship.", func() float64 {
		st := status()
		return float64(st.Spool.Finished + st.Spool.Unfinished)
	})
	gauge("upload_queue_oldest_seconds", "Age of the oldest recording the playback server has not acknowledged whole.", func() float64 {
		st := status()
		var oldest time.Duration
		if st.Uploads != nil {
			for _, r := range st.Uploads.Recordings {
				oldest = max(oldest, r.Age)
			}
		}
		return oldest.Seconds()
	})
	gauge("upload_pending_bytes", "Bytes the playback server has not acknowledged yet.", func() float64 {
		st := status()
		var n int64
		if st.Uploads != nil {
			for _, r := range st.Uploads.Recordings {
				n += r.Pending
			}
		}
		return float64(n)
	})
	gauge("unrecorded_reports_pending", "Reports of unrecorded sessions not yet delivered to the CA or the playback server.", func() float64 {
		st := status()
		if st.Unrecorded == nil {
			return 0
		}
		return float64(max(st.Unrecorded.PendingCA, st.Unrecorded.PendingPlayback))
	})
	gauge("revocation_list_age_seconds", "Time since the revocation list was last fetched from the CA.", func() float64 {
		st := status()
		if st.Revocations == nil || st.Revocations.FetchedAt.IsZero() {
			return -1
		}
		return now().Sub(st.Revocations.FetchedAt).Seconds()
	})
	gauge("host_certificate_expiry_seconds", "Time left on the host certificate.", func() float64 {
		if c := srv.HostCertificate(); c != nil {
			return time.Unix(int64(c.ValidBefore), 0).Sub(now()).Seconds()
		}
		return 0
	})
	gauge("preauth_unauthenticated", "Connections not authenticated yet.", func() float64 { return float64(srv.PreauthStats().Unauthenticated) })
	counter("preauth_dropped_total", "Connections closed at accept by the pre-authentication limits (per source, MaxStartups, penalties).", func() float64 {
		p := srv.PreauthStats()
		return float64(p.DroppedPerSource + p.DroppedStartups + p.DroppedPenalty)
	})
	counter("preauth_timeouts_total", "Connections closed by the banner or handshake timeout.", func() float64 {
		p := srv.PreauthStats()
		return float64(p.BannerTimeouts + p.HandshakeTimeouts)
	})
	return reg
}
