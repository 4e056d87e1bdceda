// Package metricsrv serves the sshward servers' Prometheus metrics on a
// listener of their own (--metrics-listen), apart from the API: nothing
// on it is authenticated, so it belongs on loopback or a management
// network. Each server builds its own registry (no global state) with the
// Go runtime and process collectors, its HTTP metrics (HTTP) and whatever
// it knows of itself (gauges and counters read from its status at scrape
// time).
package metricsrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Listen opens addr for Serve, so that a bad address fails the start.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve answers GET /metrics on ln until ctx ends, and GET /readyz when
// ready is set (200 "ready", or 503 with its error).
func Serve(ctx context.Context, ln net.Listener, reg *prometheus.Registry, log *slog.Logger, ready func(context.Context) error) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	if ready != nil {
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			if err := ready(r.Context()); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
			fmt.Fprintln(w, "ready")
		})
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// HTTP returns a middleware that counts requests and times them by the
// route pattern they matched (never the raw path: ids would explode the
// label) and status code, as NAMESPACE_http_requests_total,
// NAMESPACE_http_request_duration_seconds and
// NAMESPACE_http_request_body_bytes_total.
func HTTP(reg prometheus.Registerer, namespace string) func(http.Handler) http.Handler {
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_requests_total",
		Help: "HTTP requests by route pattern and status code."}, []string{"route", "code"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "http_request_duration_seconds",
		Help:    "Time to answer an HTTP request (until the handler returned), by route pattern.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}}, []string{"route"})
	body := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_request_body_bytes_total",
		Help: "Request body bytes received, by route pattern (the ingest rate of chunk uploads)."}, []string{"route"})
	reg.MustRegister(reqs, dur, body)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
			next.ServeHTTP(sw, r)
			route := r.Pattern // set by the ServeMux that routed it
			if route == "" {
				route = "unmatched"
			}
			reqs.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
			if r.ContentLength > 0 {
				body.WithLabelValues(route).Add(float64(r.ContentLength))
			}
			dur.WithLabelValues(route).Observe(time.Since(start).Seconds())
		})
	}
}

type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(p)
}

// Flush passes flushes on (live follow streams).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
