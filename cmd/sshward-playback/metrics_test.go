package main

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/web/webtest"
)

// TestPlaybackMetrics: the playback server's own gauges read its real
// store and server (webtest: real CA, real playback server, a recording
// shipped through the ingest API): nothing pending once the recording is
// indexed, no archive configured, and the Go runtime collector. The HTTP
// middleware is the one sshward-ca's TestMetrics checks end to end.
func TestPlaybackMetrics(t *testing.T) {
	st := webtest.New(t)
	st.Record(t, webtest.Session{ID: "s-metrics", User: "pat", Tier: "staging",
		Steps: []webtest.Step{{After: time.Second, Output: "metrics-check\r\n"}}})
	st.WaitSearch(t, "s-metrics", "metrics-check")
	reg := playbackMetrics(st.Store, func() *playback.Server { return st.Server })
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{"sshward_playback_index_pending 0\n", "sshward_playback_index_retrying 0\n",
		"sshward_playback_archive_pending 0\n", "sshward_playback_archived_total 0\n", "go_goroutines "} {
		if !strings.Contains(text, want) {
			t.Errorf("playback metrics lack %q", want)
		}
	}
}
