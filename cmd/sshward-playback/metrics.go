package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sshward/sshward/cmd/internal/metricsrv"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/store"
)

// playbackMetrics is what `sshward-playback serve --metrics-listen`
// exposes besides the HTTP metrics (ingest bytes by route, search latency
// by route): the search index's backlog and retries, and the archive to
// object storage.
func playbackMetrics(st *store.Store, srv func() *playback.Server) *prometheus.Registry {
	reg := metricsrv.NewRegistry()
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sshward_playback", Name: name, Help: help}, f))
	}
	gauge("index_pending", "Recordings not yet searchable (catch-up after a start, or retrying a failed write).", func() float64 {
		return float64(st.IndexStatus().Pending)
	})
	gauge("index_retrying", "Recordings whose index write failed and is being retried.", func() float64 {
		return float64(st.IndexStatus().Retrying)
	})
	gauge("archive_pending", "Finished recordings not yet in the object store (0 without one).", func() float64 {
		if s := srv(); s != nil {
			return float64(s.ArchiveStatus().Pending)
		}
		return 0
	})
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "sshward_playback", Name: "archived_total",
		Help: "Recordings uploaded to the object store by this process."}, func() float64 {
		if s := srv(); s != nil {
			return float64(s.ArchiveStatus().Archived)
		}
		return 0
	}))
	return reg
}
