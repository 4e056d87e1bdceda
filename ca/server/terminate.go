package server

import (
	"encoding/json"
	"net/http"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// handleTerminate ends a live session (api.PathSessionsTerminate). Unlike
// withSession routes it admits reader tokens (api.ScopeReadRecordings):
// the auditor acts from the playback web UI or `sshward terminate`, whose
// tokens read recordings and mint nothing. The Authority decides by the
// policy's terminate_groups.
func (s *Server) handleTerminate(w http.ResponseWriter, r *http.Request) {
	tok, ok := bearer(r)
	if !ok {
		writeError(w, &api.Error{Code: api.CodeUnauthenticated, Status: http.StatusUnauthorized, Message: "this request needs an sshward session: run sshward login"})
		return
	}
	sess, err := s.a.Authenticate(r.Context(), tok)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req api.TerminateRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, err := s.a.Terminate(r.Context(), sess, r.PathValue("id"), req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// sendTerminateOrders sends the orders for tiers published after termPos,
// as events at revocation position pos; it returns the new position and a
// channel closed when the next order is published.
func (s *Server) sendTerminateOrders(send func(api.RevocationEvent) error, tiers []string, termPos, pos uint64) (uint64, <-chan struct{}, error) {
	orders, next, ch := s.a.TerminateOrdersSince(termPos, tiers)
	for i := range orders {
		if err := send(api.RevocationEvent{Type: api.EventTerminate, Seq: pos, Terminate: &orders[i]}); err != nil {
			return termPos, nil, err
		}
	}
	return next, ch, nil
}

// handleFlag takes a flag an agent raised (api.PathHostFlags).
func (s *Server) handleFlag(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	var f api.FlagReport
	if err := json.Unmarshal(body, &f); err != nil {
		writeError(w, &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "the body must be a flag report (JSON)"})
		return
	}
	if err := s.a.ReportFlag(r.Context(), cert, f, clientIP(r)); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}
