package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/hostauth"
)

// playbackURL is the playback server's base URL: the configured one, else
// the one the CA announces (GET /v1/trust), remembered once known. ""
// without error: none is registered yet.
func (s *Server) playbackURL(ctx context.Context) (string, error) {
	if u := s.playback.Load(); u != nil {
		return *u, nil
	}
	url := s.cfg.Playback.URL
	if url == "" {
		f, ok := s.cfg.CA.(playbackFinder)
		if !ok {
			return "", errors.New("agent: the CA client cannot tell where the playback server is")
		}
		tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		tr, err := f.Trust(tctx)
		cancel()
		if err != nil {
			return "", fmt.Errorf("agent: ask the CA for the playback server: %w", err)
		}
		// The playback server that joined last first, then every other
		// that joined (replicas on one bucket): the shipper fails over.
		url = tr.Playback
		for _, u := range tr.PlaybackReplicas {
			if u != tr.Playback && !strings.Contains(u, ",") {
				url += "," + u
			}
		}
		url = strings.TrimPrefix(url, ",")
	}
	if url != "" {
		url = strings.TrimRight(url, "/")
		s.playback.CompareAndSwap(nil, &url)
	}
	return url, nil
}

// playbackClient is the HTTPS client for the playback server: its TLS
// certificate chains to the CA's root.
func (s *Server) playbackClient() (*http.Client, error) {
	s.playbackHTTPOnce.Do(func() {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(s.cfg.Playback.RootPEM) {
			s.playbackHTTPErr = errors.New("agent: the CA root for the playback server's TLS is missing or not PEM")
			return
		}
		s.playbackHTTP = &http.Client{Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     90 * time.Second,
		}}
	})
	return s.playbackHTTP, s.playbackHTTPErr
}

// reportUnrecordedPlayback sends ev to the playback server, signed with the
// host certificate (ca/hostauth).
func (s *Server) reportUnrecordedPlayback(ctx context.Context, ev api.UnrecordedSession) error {
	if s.cfg.Playback == nil {
		return &finalError{"no playback server configured"}
	}
	base, err := s.playbackURL(ctx)
	if err != nil {
		return err
	}
	if base == "" {
		return errors.New("agent: no playback server is registered with the CA yet")
	}
	// Replicas (comma-separated): the report goes to the first; a failure
	// is retried later like any other.
	base, _, _ = strings.Cut(base, ",")
	hc, err := s.playbackClient()
	if err != nil {
		return &finalError{err.Error()}
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("agent: encode report: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+api.PlaybackUnrecordedPath(ev.SessionID), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("agent: report to the playback server: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	id := s.identity()
	if err := hostauth.Sign(req, body, id.cert, id.key, s.cfg.Now(), s.cfg.Rand); err != nil {
		return fmt.Errorf("agent: sign report: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent: report to the playback server: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var ae api.Error
	msg := http.StatusText(resp.StatusCode)
	if json.Unmarshal(data, &ae) == nil && ae.Message != "" {
		msg = oneLine(ae.Message)
	}
	if refusedForGood(resp.StatusCode, ae.Code) {
		return &finalError{fmt.Sprintf("refused by the playback server (%d %s): %s", resp.StatusCode, ae.Code, msg)}
	}
	return fmt.Errorf("agent: the playback server answered %d: %s", resp.StatusCode, msg)
}
