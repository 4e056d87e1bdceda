package server

import (
	"encoding/json"
	"net/http"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// unrecordedRoutes registers the host report of an open tier's session
// that runs unrecorded (ca.Authority.ReportUnrecorded).
func (s *Server) unrecordedRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+api.PathHostUnrecorded, s.withHost(s.handleUnrecorded))
}

func (s *Server) handleUnrecorded(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	// Not strict: a newer agent's report may carry fields this CA does not
	// know, and an alert must not be refused for that.
	var u api.UnrecordedSession
	if err := json.Unmarshal(body, &u); err != nil {
		writeError(w, &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "the body must be an unrecorded-session report (JSON)"})
		return
	}
	resp, err := s.a.ReportUnrecorded(r.Context(), cert, u, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}
