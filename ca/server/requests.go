package server

import (
	"net/http"
	"strconv"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// requestRoutes registers the access-request API (dual control; see
// api.PathRequests for the table). People act with their CA session; hosts
// report the use of a single-use certificate with their host certificate.
func (s *Server) requestRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+api.PathRequests, s.withSession(s.handleCreateRequest))
	mux.HandleFunc("GET "+api.PathRequests, s.withSession(s.handleListRequests))
	mux.HandleFunc("GET "+api.PathRequests+"/{id}", s.withSession(s.handleGetRequest))
	mux.HandleFunc("POST "+api.PathRequests+"/{id}/approve", s.withSession(s.handleDecision(false)))
	mux.HandleFunc("POST "+api.PathRequests+"/{id}/deny", s.withSession(s.handleDecision(true)))
	mux.HandleFunc("POST "+api.PathHostRequests+"{id}/used", s.withHost(s.handleRequestUsed))
	mux.HandleFunc("POST "+api.PathHostSingleUse+"{serial}/claim", s.withHost(s.handleSingleUseClaim))
}

func (s *Server) handleCreateRequest(w http.ResponseWriter, r *http.Request, sess *store.Session) {
	var req api.CreateRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, err := s.a.CreateRequest(r.Context(), sess, req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, resp)
}

func (s *Server) handleListRequests(w http.ResponseWriter, r *http.Request, sess *store.Session) {
	q := r.URL.Query()
	all := false
	if v := q.Get("all"); v != "" {
		var err error
		if all, err = strconv.ParseBool(v); err != nil {
			writeError(w, &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "all must be true or false"})
			return
		}
	}
	resp, err := s.a.ListRequests(r.Context(), sess, q.Get("scope"), all)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleGetRequest(w http.ResponseWriter, r *http.Request, sess *store.Session) {
	resp, err := s.a.GetRequest(r.Context(), sess, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleDecision(deny bool) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, sess *store.Session) {
		var d api.Decision
		if !s.decode(w, r, &d) {
			return
		}
		decide := s.a.Approve
		if deny {
			decide = s.a.Deny
		}
		resp, err := decide(r.Context(), sess, r.PathValue("id"), d, clientIP(r))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

func (s *Server) handleRequestUsed(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	var req api.RequestUsed
	if err := decodeStrict(body, &req); err != nil {
		writeError(w, err)
		return
	}
	resp, err := s.a.ReportRequestUsed(r.Context(), cert, r.PathValue("id"), req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleSingleUseClaim lets a host claim a single-use certificate before
// its session starts (ca.Authority.ClaimSingleUse): 200 for the one claim
// that wins, 409 already_used for every other.
func (s *Server) handleSingleUseClaim(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	serial, err := strconv.ParseUint(r.PathValue("serial"), 10, 64)
	if err != nil || serial == 0 {
		writeError(w, &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "the serial in the path must be a positive decimal number"})
		return
	}
	var req api.SingleUseClaim
	if derr := decodeStrict(body, &req); derr != nil {
		writeError(w, derr)
		return
	}
	resp, err := s.a.ClaimSingleUse(r.Context(), cert, serial, req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}
