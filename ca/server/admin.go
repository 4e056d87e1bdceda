package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// Admin API paths, served only on the 0600 unix socket in the CA directory.
const (
	AdminUsers       = "/admin/users"
	AdminJoinTokens  = "/admin/join-tokens"
	AdminRevoke      = "/admin/revoke"
	AdminAudit       = "/admin/audit"
	AdminAuditVerify = "/admin/audit/verify"
	AdminSessions    = "/admin/sessions"
	AdminBackup      = "/admin/backup" // GET: the store snapshot, application/octet-stream
	AdminReview      = "/admin/review" // GET ?since=RFC3339: the access review; POST …/signoff
)

// ReviewSignOffRequest is the body of POST /admin/review/signoff.
type ReviewSignOffRequest struct {
	SignOff ca.ReviewSignOff `json:"signoff"`
	Since   time.Time        `json:"since"`
}

// PasswordChange is the body of PUT /admin/users/{name}/password.
type PasswordChange struct {
	Password string `json:"password"`
}

// UserDisable is the body of POST /admin/users/{name}/disable.
type UserDisable struct {
	Reason string `json:"reason,omitempty"`
}

// VerifyResult answers GET /admin/audit/verify.
type VerifyResult struct {
	OK      bool   `json:"ok"`
	Records int    `json:"records"`
	Head    string `json:"head,omitempty"`
	Error   string `json:"error,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
	// Archived: records up to Archived.Seq were archived and pruned from
	// the store; the chain in the store was checked from there.
	Archived *store.AuditCheckpoint `json:"archived,omitempty"`
}

func (s *Server) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	s.keyRoutes(mux) // rotate.go
	mux.HandleFunc("POST "+AdminUsers, func(w http.ResponseWriter, r *http.Request) {
		var req ca.AddUserRequest
		if !s.decode(w, r, &req) {
			return
		}
		req.By = "admin-socket"
		res, err := s.a.AddUser(r.Context(), req)
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("GET "+AdminUsers, func(w http.ResponseWriter, r *http.Request) {
		res, err := s.a.ListUsers(r.Context())
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("DELETE "+AdminUsers+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		err := s.a.RemoveUser(r.Context(), r.PathValue("name"), "admin-socket")
		s.reply(w, r, map[string]string{"removed": r.PathValue("name")}, err)
	})
	mux.HandleFunc("POST "+AdminUsers+"/{name}/disable", func(w http.ResponseWriter, r *http.Request) {
		var req UserDisable
		if !s.decode(w, r, &req) {
			return
		}
		res, err := s.a.DisableUser(r.Context(), r.PathValue("name"), req.Reason, "admin-socket")
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("POST "+AdminUsers+"/{name}/enable", func(w http.ResponseWriter, r *http.Request) {
		err := s.a.EnableUser(r.Context(), r.PathValue("name"), "admin-socket")
		s.reply(w, r, map[string]string{"enabled": r.PathValue("name")}, err)
	})
	mux.HandleFunc("PUT "+AdminUsers+"/{name}/password", func(w http.ResponseWriter, r *http.Request) {
		var req PasswordChange
		if !s.decode(w, r, &req) {
			return
		}
		err := s.a.SetPassword(r.Context(), r.PathValue("name"), req.Password, "admin-socket")
		s.reply(w, r, map[string]string{"updated": r.PathValue("name")}, err)
	})
	mux.HandleFunc("POST "+AdminJoinTokens, func(w http.ResponseWriter, r *http.Request) {
		var req ca.JoinTokenRequest
		if !s.decode(w, r, &req) {
			return
		}
		req.By = "admin-socket"
		res, err := s.a.NewJoinToken(r.Context(), req)
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("POST "+AdminRevoke, func(w http.ResponseWriter, r *http.Request) {
		var req ca.RevokeRequest
		if !s.decode(w, r, &req) {
			return
		}
		req.By = "admin-socket"
		res, err := s.a.Revoke(r.Context(), req)
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("GET "+AdminAudit, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := store.AuditFilter{Type: q.Get("type")}
		f.AfterSeq, _ = strconv.ParseUint(q.Get("after"), 10, 64)
		f.Limit, _ = strconv.Atoi(q.Get("limit"))
		res, err := s.a.Audit(r.Context(), f)
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("GET "+AdminAuditVerify, func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.a.VerifyAudit(r.Context())
		writeJSON(w, http.StatusOK, VerifyResultOf(rep, err))
	})
	mux.HandleFunc("GET "+AdminSessions, func(w http.ResponseWriter, r *http.Request) {
		res, err := s.a.Sessions(r.Context())
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("GET "+AdminReview, func(w http.ResponseWriter, r *http.Request) {
		since, err := time.Parse(time.RFC3339, r.URL.Query().Get("since"))
		if err != nil {
			writeError(w, &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "since must be an RFC 3339 time"})
			return
		}
		res, err := s.a.Review(r.Context(), since)
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("POST "+AdminReview+"/signoff", func(w http.ResponseWriter, r *http.Request) {
		var req ReviewSignOffRequest
		if !s.decode(w, r, &req) {
			return
		}
		res, err := s.a.SignOff(r.Context(), req.SignOff, req.Since)
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("GET "+AdminBackup, func(w http.ResponseWriter, r *http.Request) {
		// Streamed: a failure after the first byte can only cut the body,
		// which the client sees as a short snapshot (it checks the file).
		cw := &countingWriter{w: w, header: func() { w.Header().Set("Content-Type", "application/octet-stream") }}
		if _, err := s.a.Backup(r.Context(), "admin-socket", cw); err != nil {
			if cw.n == 0 {
				s.fail(w, r, err)
				return
			}
			s.cfg.Logger.ErrorContext(r.Context(), "ca: backup over the admin socket cut short", "err", err)
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &api.Error{Code: api.CodeNotFound, Status: http.StatusNotFound, Message: "no such admin path: " + r.URL.Path})
	})
	return s.recoverer(mux)
}

// VerifyResultOf turns a chain check into its wire form.
func VerifyResultOf(rep store.AuditReport, err error) VerifyResult {
	v := VerifyResult{OK: err == nil, Records: rep.Records, Head: rep.Head}
	if rep.Archived.Seq > 0 {
		v.Archived = &rep.Archived
	}
	if err != nil {
		v.Error = err.Error()
		var ce *store.ChainError
		if errors.As(err, &ce) {
			v.Seq = ce.Seq
		}
	}
	return v
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// countingWriter counts what reaches w and sets the headers before the
// first byte, so that a failure before it can still be answered as one.
type countingWriter struct {
	w      http.ResponseWriter
	header func()
	n      int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.n == 0 && c.header != nil {
		c.header()
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
