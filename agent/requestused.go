package agent

import (
	"context"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// requestReporter is the part of the CA client that closes an access
// request once its single-use certificate started a session. Optional: a
// CA without it (tests, older CAs) simply is not told.
type requestReporter interface {
	ReportRequestUsed(ctx context.Context, id string, used api.RequestUsed, cert *ssh.Certificate, signer ssh.Signer) (*api.AccessRequest, error)
}

// reportRequestTimeout bounds the best-effort report; admission never waits.
const reportRequestTimeout = 30 * time.Second

// reportRequestUsed tells the CA, in the background, that the request's
// single-use certificate has been used here (DESIGN: issued → done). The
// agent's own single-use record is what refuses a second session; this only
// moves the request to "done" in the CA's audit trail.
func (s *Server) reportRequestUsed(id string, serial uint64, connID string) {
	r, ok := s.cfg.CA.(requestReporter)
	if !ok {
		return
	}
	hid := s.identity()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), reportRequestTimeout)
		defer cancel()
		if _, err := r.ReportRequestUsed(ctx, id, api.RequestUsed{Serial: serial, SessionID: connID}, hid.cert, hid.key); err != nil {
			s.log.Warn("could not tell the CA that an access request was used", "request_id", id, "serial", serial, "err", err)
		}
	}()
}
