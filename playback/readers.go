package playback

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
)

// CookieName is the web UI's session cookie: the CA session token, HttpOnly,
// Secure, SameSite=Strict.
const CookieName = "sshward_session"

// reader is an authenticated reader of the API.
type reader struct {
	user   string
	groups []string
	token  string
}

// sessionCache remembers the CA's answers about session tokens for a short
// while, keyed by the token's SHA-256 (the token itself is not kept as a
// key), so that a page of requests costs one call to the CA.
type sessionCache struct {
	ca  CA
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex // guards entries
	entries map[[32]byte]sessionEntry
}

type sessionEntry struct {
	info    *api.SessionInfo
	expires time.Time
}

// maxSessionCache bounds the cache; past it, expired entries go first and
// then everything (the CA is asked again).
const maxSessionCache = 10000

func (c *sessionCache) check(ctx context.Context, token string) (*api.SessionInfo, error) {
	key := sha256.Sum256([]byte(token))
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.info, nil
	}
	info, err := c.ca.Session(ctx, token)
	if err != nil {
		return nil, err
	}
	// Never trust a session past its own expiry.
	exp := now.Add(c.ttl)
	if !info.ExpiresAt.IsZero() && info.ExpiresAt.Before(exp) {
		exp = info.ExpiresAt
	}
	c.mu.Lock()
	if len(c.entries) >= maxSessionCache {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxSessionCache {
			clear(c.entries)
		}
	}
	c.entries[key] = sessionEntry{info: info, expires: exp}
	c.mu.Unlock()
	return info, nil
}

func (c *sessionCache) forget(token string) {
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	delete(c.entries, key)
	c.mu.Unlock()
}

// credential returns the session token of a request: a Bearer header (CLI)
// or the cookie (web UI).
func credential(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		const p = "Bearer "
		if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
			return "", false
		}
		return strings.TrimSpace(h[len(p):]), true
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		return c.Value, true
	}
	return "", false
}

type readerHandler func(w http.ResponseWriter, r *http.Request, who *reader)

// withReader admits any reader with a live CA session.
func (s *Server) withReader(h readerHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := credential(r)
		if !ok || len(tok) > 256 {
			writeError(w, http.StatusUnauthorized, api.CodeUnauthenticated, "this needs an sshward session: run sshward login, or log in to the web page")
			return
		}
		info, err := s.sessions.check(r.Context(), tok)
		var ae *api.Error
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
			writeError(w, http.StatusUnauthorized, api.CodeUnauthenticated, "your sshward session is missing, expired or revoked: log in again")
			return
		case err != nil:
			if r.Context().Err() == nil {
				s.log.WarnContext(r.Context(), "playback: cannot check a session with the CA", "err", err)
			}
			writeError(w, http.StatusServiceUnavailable, "ca_unavailable", "the CA cannot be reached to check your session: try again shortly")
			return
		}
		if info.Scope != api.ScopeReadRecordings {
			// A login session was sent: refuse it, so that nothing here ever
			// holds (or learns to rely on) a token that mints certificates.
			s.log.WarnContext(r.Context(), "playback: refused a login session token; readers send reader tokens", "user", info.User)
			writeError(w, http.StatusUnauthorized, api.CodeUnauthenticated,
				"send a reader token, not your login session: sshward does this itself (update it), or log in on the web page")
			return
		}
		h(w, r, &reader{user: info.User, groups: info.Groups, token: tok})
	}
}

// withAuditor admits only members of the auditor group; a refusal is
// audited (someone tried to look).
func (s *Server) withAuditor(h readerHandler) http.HandlerFunc {
	return s.withReader(func(w http.ResponseWriter, r *http.Request, who *reader) {
		if !slices.Contains(who.groups, s.cfg.AuditorGroup) {
			s.audit(r, store.AuditEvent{Type: "access.denied", Actor: who.user, Subject: r.URL.Path, Outcome: "refused",
				Reason: "not in group " + s.cfg.AuditorGroup})
			writeError(w, http.StatusForbidden, api.CodeForbidden, "only auditors (group "+s.cfg.AuditorGroup+") may list or watch recordings")
			return
		}
		h(w, r, who)
	})
}

// audit appends to the playback audit log; a failure is logged (the action
// itself already happened or is refused anyway).
func (s *Server) audit(r *http.Request, ev store.AuditEvent) {
	ev.ClientAddr = clientIP(r)
	if _, err := s.st.AppendAudit(context.WithoutCancel(r.Context()), ev); err != nil {
		s.log.ErrorContext(r.Context(), "playback: audit", "type", ev.Type, "err", err)
	}
}

// LoginResponse answers POST /api/login.
type LoginResponse struct {
	User   string   `json:"user"`
	Groups []string `json:"groups"`
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req api.LoginRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if err := req.Check(); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	// The browser gets a reader session: the CA issues it scoped to reading
	// recordings, so this server never holds a token that mints
	// certificates (design: Trust invariants).
	req.Scope = api.ScopeReadRecordings
	resp, err := s.cfg.CA.Login(r.Context(), req)
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		s.audit(r, store.AuditEvent{Type: "login", Actor: req.User, Outcome: "refused", Reason: ae.Message})
		status := ae.Status
		if status == 0 || status >= 500 {
			status = http.StatusBadGateway
		}
		writeError(w, status, ae.Code, ae.Message)
		return
	case err != nil:
		s.log.WarnContext(r.Context(), "playback: login through the CA failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "ca_unavailable", "the CA cannot be reached: try again shortly")
		return
	}
	s.audit(r, store.AuditEvent{Type: "login", Actor: resp.User})
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: resp.Token, Path: "/", Expires: resp.ExpiresAt,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	writeJSON(w, http.StatusOK, LoginResponse{User: resp.User, Groups: resp.Groups})
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request, who *reader) {
	if err := s.cfg.CA.Logout(r.Context(), who.token); err != nil {
		s.log.WarnContext(r.Context(), "playback: logout at the CA failed", "user", who.user, "err", err)
	}
	s.sessions.forget(who.token)
	s.audit(r, store.AuditEvent{Type: "logout", Actor: who.user})
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// decodeJSON reads a bounded, strict JSON body. Insisting on the JSON
// content type keeps browsers from sending "simple" cross-site form posts.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, api.CodeBadRequest, "send the request body as application/json")
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body too large")
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil || dec.More() {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "malformed JSON request")
		return false
	}
	return true
}
