package ca

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/identity"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
)

// tokenPrefix marks CA session tokens so that secret scanners find them.
const tokenPrefix = "sws_"

// Login checks a local user's password (and TOTP code when enrolled) and
// opens a CA session. Failures count toward a lockout with backoff; an
// unknown user costs the same time as a wrong password.
func (a *Authority) Login(ctx context.Context, req api.LoginRequest, clientAddr string) (*api.LoginResponse, error) {
	ev := store.AuditEvent{Type: "login", Actor: req.User, Subject: req.User, ClientAddr: clientAddr, Details: map[string]string{"method": "password"}}
	resp, err := a.login(ctx, req, clientAddr)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return resp, nil
}

func (a *Authority) login(ctx context.Context, req api.LoginRequest, clientAddr string) (*api.LoginResponse, error) {
	if err := req.Check(); err != nil {
		return nil, badRequest(err, "login: %v", err)
	}
	now := a.cfg.Now()
	var u *store.User
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		u, err = tx.GetUser(req.User)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		identity.DummyVerify(req.Password)
		return nil, refuse(api.CodeUnauthenticated, http.StatusUnauthorized, ErrBadCredentials, "user or password is wrong")
	}
	if err != nil {
		return nil, fmt.Errorf("ca: login %q: %w", req.User, err)
	}
	if until := u.LockedUntil; now.Before(until) {
		wait := until.Sub(now).Round(time.Second)
		return nil, refuse(api.CodeLocked, http.StatusTooManyRequests, &LockedError{Wait: wait.String()},
			"too many failed logins for %s: try again in %s", req.User, wait)
	}
	ok, err := identity.VerifyPassword(u.PasswordHash, req.Password)
	if err != nil || !ok {
		a.countFailure(ctx, req.User, now)
		return nil, refuse(api.CodeUnauthenticated, http.StatusUnauthorized, ErrBadCredentials, "user or password is wrong")
	}
	mfa := false
	var step int64
	if u.TOTPSecret != "" {
		if req.OTP == "" {
			return nil, refuse(api.CodeOTPRequired, http.StatusUnauthorized, ErrOTPRequired, "a TOTP code is required for %s: pass --otp CODE or enter it when asked", req.User)
		}
		step, err = identity.CheckTOTP(u.TOTPSecret, req.OTP, now, u.TOTPLastStep)
		if err != nil {
			a.countFailure(ctx, req.User, now)
			return nil, refuse(api.CodeUnauthenticated, http.StatusUnauthorized, ErrBadOTP, "the TOTP code is wrong or was already used: wait for the next code")
		}
		mfa = true
	}
	token, sess, err := a.newSession(u.Name, u.Groups, mfa, "local", clientAddr, now)
	if err != nil {
		return nil, err
	}
	ev := store.AuditEvent{Type: "login", Actor: u.Name, Subject: u.Name, ClientAddr: clientAddr, Outcome: "ok",
		Details: map[string]string{"method": "password", "mfa": fmt.Sprint(mfa)}}
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		cur, err := tx.GetUser(u.Name)
		if err != nil {
			return err
		}
		if mfa {
			if step <= cur.TOTPLastStep { // a concurrent login used this code
				return ErrBadOTP
			}
			cur.TOTPLastStep = step
		}
		cur.Failures, cur.LockedUntil = 0, time.Time{}
		if err := tx.PutUser(cur); err != nil {
			return err
		}
		if err := tx.PutSession(sess); err != nil {
			return err
		}
		return a.appendAudit(tx, ev)
	})
	if errors.Is(err, ErrBadOTP) {
		return nil, refuse(api.CodeUnauthenticated, http.StatusUnauthorized, ErrBadOTP, "the TOTP code is wrong or was already used: wait for the next code")
	}
	if err != nil {
		return nil, fmt.Errorf("ca: record login of %q: %w", u.Name, err)
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "login", slog.String("user", u.Name), slog.Bool("mfa", mfa), slog.String("client", clientAddr))
	return &api.LoginResponse{Token: token, User: u.Name, Groups: u.Groups, MFA: mfa, ExpiresAt: sess.ExpiresAt}, nil
}

func (a *Authority) countFailure(ctx context.Context, user string, now time.Time) {
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		u, err := tx.GetUser(user)
		if err != nil {
			return err
		}
		u.Failures++
		u.LastFailure = now
		u.LockedUntil = a.cfg.Lockout.Until(u.Failures, now)
		return tx.PutUser(u)
	})
	if err != nil {
		a.cfg.Logger.Error("count login failure", "user", user, "err", err)
	}
}

// LoginOIDC exchanges an ID token (obtained by the client with auth code +
// PKCE or the device flow) for a CA session.
func (a *Authority) LoginOIDC(ctx context.Context, rawIDToken, clientAddr string) (*api.LoginResponse, error) {
	ev := store.AuditEvent{Type: "login", ClientAddr: clientAddr, Details: map[string]string{"method": "oidc"}}
	if a.cfg.OIDC == nil {
		err := refuse(api.CodeBadRequest, http.StatusNotFound, ErrNoOIDC, "OIDC login is not configured on this CA: log in with --user")
		return nil, err
	}
	id, err := a.cfg.OIDC.Verify(ctx, rawIDToken)
	if err != nil {
		r := refuse(api.CodeUnauthenticated, http.StatusUnauthorized, err, "the identity provider's token was refused (%s): log in again", trimPkg(err))
		a.auditRefusal(ctx, ev, r)
		return nil, r
	}
	user := id.User
	if !policy.IsValidPrincipal(user) {
		// Keep the identity readable in audit and KeyIds even when the
		// claim is an e-mail address.
		user = strings.ToLower(strings.NewReplacer("@", "_", "+", "_").Replace(user))
	}
	now := a.cfg.Now()
	token, sess, err := a.newSession(user, id.Groups, id.MFA, "oidc", clientAddr, now)
	if err != nil {
		return nil, err
	}
	ev.Actor, ev.Subject, ev.Outcome = user, user, "ok"
	ev.Details["mfa"] = fmt.Sprint(id.MFA)
	ev.Details["subject"] = id.Subject
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		if err := tx.PutSession(sess); err != nil {
			return err
		}
		return a.appendAudit(tx, ev)
	})
	if err != nil {
		return nil, fmt.Errorf("ca: record oidc login of %q: %w", user, err)
	}
	return &api.LoginResponse{Token: token, User: user, Groups: id.Groups, MFA: id.MFA, ExpiresAt: sess.ExpiresAt}, nil
}

func (a *Authority) newSession(user string, groups []string, mfa bool, source, clientAddr string, now time.Time) (string, *store.Session, error) {
	var raw [32]byte
	if _, err := io.ReadFull(a.cfg.Rand, raw[:]); err != nil {
		return "", nil, fmt.Errorf("ca: session token: %w", err)
	}
	token := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	ttl := a.cfg.Policy.SessionTTL
	if ttl <= 0 {
		ttl = 12 * time.Hour
	}
	return token, &store.Session{
		ID: tokenID(token), User: user, Groups: groups, MFA: mfa, Source: source,
		CreatedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC(), ClientAddr: clientAddr,
	}, nil
}

// tokenID is how a secret token is stored and looked up: its SHA-256. A
// lookup by hash needs no constant-time compare and a stolen store holds no
// usable token.
func tokenID(token string) string { return store.TokenID(token) }

// Authenticate returns the live session a Bearer token names.
func (a *Authority) Authenticate(ctx context.Context, token string) (*store.Session, error) {
	unauth := refuse(api.CodeUnauthenticated, http.StatusUnauthorized, ErrSessionInvalid, "your sshward session is missing, expired or revoked: run sshward login")
	if !strings.HasPrefix(token, tokenPrefix) || len(token) > 128 {
		return nil, unauth
	}
	id := tokenID(token)
	if cached, ok := a.sessions.get(id); ok {
		s := cached
		if !a.cfg.Now().Before(s.ExpiresAt) {
			a.sessions.drop(id)
			return nil, unauth
		}
		return &s, nil
	}
	gen := a.sessions.generation()
	var s *store.Session
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		s, err = tx.GetSession(id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, unauth
	}
	if err != nil {
		return nil, fmt.Errorf("ca: authenticate: %w", err)
	}
	now := a.cfg.Now()
	if !s.RevokedAt.IsZero() || !now.Before(s.ExpiresAt) {
		return nil, unauth
	}
	a.sessions.put(*s, gen)
	return s, nil
}

// Logout revokes the session a token names.
func (a *Authority) Logout(ctx context.Context, s *store.Session) error {
	now := a.cfg.Now()
	defer a.sessions.drop(s.ID) // after the commit: see sessionCache
	return a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		cur, err := tx.GetSession(s.ID)
		if err != nil {
			return err
		}
		cur.RevokedAt = now
		if err := tx.PutSession(cur); err != nil {
			return err
		}
		return a.appendAudit(tx, store.AuditEvent{Type: "logout", Actor: s.User, Subject: s.User, Outcome: "ok"})
	})
}

// SessionInfo describes a session to its owner.
func (a *Authority) SessionInfo(s *store.Session) *api.SessionInfo {
	return &api.SessionInfo{
		User: s.User, Groups: s.Groups, MFA: s.MFA, Source: sourceOf(s), ExpiresAt: s.ExpiresAt,
		Tiers: a.cfg.Policy.TiersFor(policy.Identity{User: s.User, Groups: s.Groups, MFA: s.MFA}),
	}
}
