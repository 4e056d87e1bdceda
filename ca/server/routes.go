package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
)

// routes is the public API. Access: "public" routes carry only public trust
// material or are how one authenticates; "session" routes need a Bearer CA
// session; "host" routes need a host-certificate signature (hostauth).
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// public
	mux.HandleFunc("GET "+api.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET "+api.PathReady, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if err := s.a.Ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready: "+err.Error()+"\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET "+api.PathTrust, s.handleTrust)
	mux.HandleFunc("GET "+api.PathKRL+"{tier}", s.handleKRL)
	mux.HandleFunc("GET "+api.PathLoginOIDC, s.handleOIDCConfig)
	mux.HandleFunc("POST "+api.PathLogin, s.handleLogin)
	mux.HandleFunc("POST "+api.PathLoginOIDC, s.handleLoginOIDC)
	mux.HandleFunc("POST "+api.PathHostJoin, s.handleJoin)
	mux.HandleFunc("POST "+api.PathWorkloadCert, s.handleWorkloadCert)
	// session
	mux.HandleFunc("GET "+api.PathSession, s.withSession(s.handleSession))
	mux.HandleFunc("DELETE "+api.PathSession, s.withSession(s.handleLogout))
	mux.HandleFunc("POST "+api.PathCert, s.withSession(s.handleCert))
	mux.HandleFunc("POST "+api.PathReaderToken, s.withSession(s.handleReaderToken))
	// host
	mux.HandleFunc("POST "+api.PathHostRenew, s.withHost(s.handleRenew))
	mux.HandleFunc("GET "+api.PathHostRevoked+"{tier}", s.withHost(s.handleRevoked))
	s.requestRoutes(mux)
	s.playbackRoutes(mux)
	s.revocationRoutes(mux)
	s.unrecordedRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &api.Error{Code: api.CodeNotFound, Status: http.StatusNotFound, Message: "no such API path: " + r.URL.Path})
	})
	return s.recoverer(securityHeaders(mux))
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// recoverer turns a handler panic into a 500 without crashing the CA.
func (s *Server) recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeError(w, &api.Error{Code: api.CodeInternal, Status: http.StatusInternalServerError, Message: "internal error"})
			}
		}()
		h.ServeHTTP(w, r)
	})
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, sess *store.Session)

func (s *Server) withSession(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
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
		// Scoped tokens (reader tokens) may only ask who they are and end
		// themselves: never mint certificates, decide requests or anything
		// else a login session does.
		if r.URL.Path != api.PathSession {
			if err := s.a.CheckScope(r.Context(), sess, r.Method+" "+r.URL.Path, clientIP(r)); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		h(w, r, sess)
	}
}

type hostHandler func(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte)

func (s *Server) withHost(h hostHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
		if err != nil {
			writeError(w, tooLarge(err))
			return
		}
		cert, err := s.hosts.Verify(r, body)
		if err != nil {
			s.log.Warn("host auth refused", "path", r.URL.Path, "client", clientIP(r), "reason", err.Error())
			writeError(w, hostAuthFailed)
			return
		}
		if s.refuseRevokedHost(w, r, cert) {
			return
		}
		h(w, r, cert, body)
	}
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

func (s *Server) handleTrust(w http.ResponseWriter, r *http.Request) {
	t := s.a.Trust(s.a.PlaybackURL(r.Context()))
	t.CAReplicas, t.PlaybackReplicas = s.a.Replicas(r.Context())
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) handleKRL(w http.ResponseWriter, r *http.Request) {
	b, err := s.a.KRL(r.Context(), r.PathValue("tier"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+r.PathValue("tier")+`.krl"`)
	w.Write(b)
}

func (s *Server) handleOIDCConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.a.OIDCClientConfig())
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req api.LoginRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, err := s.a.Login(r.Context(), req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleLoginOIDC(w http.ResponseWriter, r *http.Request) {
	var req api.OIDCLoginRequest
	if !s.decode(w, r, &req) {
		return
	}
	if err := req.Check(); err != nil {
		writeError(w, &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: err.Error()})
		return
	}
	resp, err := s.a.LoginOIDC(r.Context(), req.IDToken, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleSession(w http.ResponseWriter, r *http.Request, sess *store.Session) {
	writeJSON(w, http.StatusOK, s.a.SessionInfo(r.Context(), sess))
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request, sess *store.Session) {
	if err := s.a.Logout(r.Context(), sess); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleCert(w http.ResponseWriter, r *http.Request, sess *store.Session) {
	var req api.CertRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, err := s.a.IssueUserCert(r.Context(), sess, req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeCertResponse(w, resp)
}

// handleWorkloadCert exchanges a CI token for a certificate: public, the
// token is the credential (ca.IssueWorkloadCert throttles refusals).
func (s *Server) handleWorkloadCert(w http.ResponseWriter, r *http.Request) {
	var req api.WorkloadCertRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, err := s.a.IssueWorkloadCert(r.Context(), req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeCertResponse(w, resp)
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req api.JoinRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, err := s.a.JoinHost(r.Context(), req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	var req api.RenewRequest
	if len(body) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			writeError(w, err)
			return
		}
	}
	resp, err := s.a.RenewHost(r.Context(), cert, req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleRevoked(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, _ []byte) {
	tier := r.PathValue("tier")
	hostTier, err := s.a.HostTier(r.Context(), cert.Serial)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if hostTier != tier {
		writeError(w, &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden, Message: fmt.Sprintf("this host belongs to tier %s, not %s", hostTier, tier)})
		return
	}
	list, err := s.a.HostRevocations(r.Context(), tier)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// decode reads a bounded, strict JSON body: one object, no unknown fields.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct == "application/json" {
		// the common case, without parsing
	} else if ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeError(w, &api.Error{Code: api.CodeBadRequest, Status: http.StatusUnsupportedMediaType, Message: "send the request body as application/json"})
			return false
		}
	} else {
		// Refusing bodies without a JSON content type keeps browsers from
		// sending "simple" cross-site form posts to the API.
		writeError(w, &api.Error{Code: api.CodeBadRequest, Status: http.StatusUnsupportedMediaType, Message: "send the request body as application/json"})
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
	if err != nil {
		writeError(w, tooLarge(err))
		return false
	}
	if err := decodeStrict(body, v); err != nil {
		writeError(w, err)
		return false
	}
	return true
}

func decodeStrict(body []byte, v any) *api.Error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "malformed JSON request: " + jsonProblem(err)}
	}
	if dec.More() {
		return &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "malformed JSON request: trailing data after the object"}
	}
	return nil
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	case errors.Is(err, io.EOF):
		return "empty body"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "cannot decode"
}

func tooLarge(err error) *api.Error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &api.Error{Code: api.CodeTooLarge, Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("request body is larger than %d bytes", api.MaxBodyBytes)}
	}
	return &api.Error{Code: api.CodeBadRequest, Status: http.StatusBadRequest, Message: "could not read the request body"}
}

// fail writes a refusal as-is, and anything else as a 500 that hides detail.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ref *ca.Refusal
	if errors.As(err, &ref) {
		writeError(w, ref.APIError())
		return
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		writeError(w, ae)
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	s.log.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("path", r.URL.Path), slog.String("err", err.Error()))
	writeError(w, &api.Error{Code: api.CodeInternal, Status: http.StatusInternalServerError, Message: "internal error: see the CA log"})
}

func writeError(w http.ResponseWriter, e *api.Error) {
	if e.Status == 0 {
		e.Status = http.StatusBadRequest
	}
	writeJSON(w, e.Status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) handleReaderToken(w http.ResponseWriter, r *http.Request, sess *store.Session) {
	resp, err := s.a.ReaderToken(r.Context(), sess, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}
