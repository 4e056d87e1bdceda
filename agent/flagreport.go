package agent

import (
	"context"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// Flag alerts reach the CA (api.PathHostFlags): it audits each one, and its
// notifier plugins get the audit event (DESIGN.md "Plugins"). Reporting is
// best effort and never holds up a session: a bounded queue, a few tries;
// the agent's own audit event and the recording's marker stay either way.

// flagReporter is the part of the CA client that takes flag reports
// (ca/client.Client.ReportFlag).
type flagReporter interface {
	ReportFlag(ctx context.Context, f api.FlagReport, cert *ssh.Certificate, signer ssh.Signer) error
}

const (
	flagQueueLen     = 256
	flagReportTries  = 3
	flagReportWait   = 2 * time.Second
	flagReportBudget = 10 * time.Second
)

// queueFlagReport hands r to the reporting loop; a full queue drops it
// (logged).
func (s *Server) queueFlagReport(r api.FlagReport) {
	select {
	case s.flagQueue() <- r:
	default:
		s.log.Warn("agent: flag report queue full; the flag is in the recording and the agent's audit only", "session_id", r.SessionID, "rule", r.Rule)
	}
}

func (s *Server) flagQueue() chan api.FlagReport {
	s.over.mu.Lock()
	defer s.over.mu.Unlock()
	if s.over.reports == nil {
		s.over.reports = make(chan api.FlagReport, flagQueueLen)
	}
	return s.over.reports
}

// flagReportLoop sends queued reports until ctx ends. Owned by Serve.
func (s *Server) flagReportLoop(ctx context.Context) {
	fr, ok := s.cfg.CA.(flagReporter)
	q := s.flagQueue()
	for {
		var r api.FlagReport
		select {
		case <-ctx.Done():
			return
		case r = <-q:
		}
		if !ok {
			continue
		}
		for try := 1; try <= flagReportTries; try++ {
			id := s.identity()
			rctx, cancel := context.WithTimeout(ctx, flagReportBudget)
			err := fr.ReportFlag(rctx, r, id.cert, id.key)
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			if try == flagReportTries {
				s.log.Warn("agent: cannot report a flag to the CA", "session_id", r.SessionID, "rule", r.Rule, "err", err)
				break
			}
			if !sleep(ctx, flagReportWait) {
				return
			}
		}
	}
}
