package agent

import (
	"context"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// playbackFinder is the part of the CA client that tells where the
// playback server registered itself. Optional, like requestReporter.
type playbackFinder interface {
	Trust(ctx context.Context) (*api.TrustResponse, error)
}

// playbackRetry is how often the agent asks the CA for a playback server
// when none is configured or registered yet.
const playbackRetry = 30 * time.Second

// ship streams the spool to the playback server until ctx ends. Without a
// URL it first waits for the CA to know one; recordings stay in the spool
// meanwhile (sshward-agent status shows them).
func (s *Server) ship(ctx context.Context, sp *recorder.Spool) {
	var url string
	for {
		u, err := s.playbackURL(ctx)
		if err == nil && u != "" {
			url = u
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(playbackRetry):
		}
	}
	// Several servers (replicas on one object store), comma-separated:
	// the first, then the others when it cannot be reached.
	urls := strings.Split(url, ",")
	for i := range urls {
		urls[i] = strings.TrimSpace(urls[i])
	}
	sh, err := recorder.NewShipper(recorder.ShipperConfig{
		Spool: sp, URL: urls[0], Fallbacks: urls[1:], RootPEM: s.cfg.Playback.RootPEM, Logger: s.log, Now: s.cfg.Now, Rand: s.cfg.Rand,
		PollInterval: liveShipInterval,  // live.go
		OnRecipients: s.spoolKeys.learn, // spoolkeys.go
		Cert: func() (*ssh.Certificate, ssh.Signer) {
			id := s.identity()
			return id.cert, id.key
		},
	})
	if err != nil {
		s.log.Error("agent: cannot ship recordings; they stay in the spool", "playback", url, "err", err)
		return
	}
	s.log.Info("agent: shipping recordings", "playback", url)
	if err := sh.Run(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("agent: shipping stopped; recordings stay in the spool", "err", err)
	}
}
