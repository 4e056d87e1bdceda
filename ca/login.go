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

// Login checks a local user's password and TOTP code together and opens a
// CA session. Every failure gives the same answer, whatever failed: an
// unknown name, a wrong password, a wrong or replayed code, too many
// attempts. Without a code the answer is "code required" (CodeOTPRequired)
// unless the password alone logs in (a user without TOTP), so the password
// of a TOTP user is never confirmed before the code. Unknown names cost the
// same password hashing. Failures are throttled per (name, address) and per
// address (loginThrottle). The audit record keeps what really failed.
func (a *Authority) Login(ctx context.Context, req api.LoginRequest, clientAddr string) (*api.LoginResponse, error) {
	ev := store.AuditEvent{Type: "login", Actor: req.User, Subject: req.User, ClientAddr: clientAddr, Details: map[string]string{"method": "password"}}
	resp, err := a.login(ctx, req, clientAddr)
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) && r.Cause != nil {
			ev.Details["failure"] = strings.TrimPrefix(r.Cause.Error(), "ca: ")
		}
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return resp, nil
}

// Login refusals: one text each way, whatever failed.
const (
	msgLoginFailed  = "user, password or TOTP code is wrong, or there were too many attempts: check them and try again in a minute"
	msgCodeRequired = "a TOTP code is required (or the user or password is wrong): pass --otp CODE or enter it when asked"
)

// errThrottled is the audit's reason for a refusal by loginThrottle.
var errThrottled = errors.New("ca: too many failed logins from this address")

func (a *Authority) login(ctx context.Context, req api.LoginRequest, clientAddr string) (*api.LoginResponse, error) {
	if err := req.Check(); err != nil {
		return nil, badRequest(err, "login: %v", err)
	}
	now := a.cfg.Now()
	fail := func(cause error, count bool) error {
		if count {
			a.throttleFail(ctx, req.User, clientAddr, now)
		}
		if req.OTP == "" {
			return refuse(api.CodeOTPRequired, http.StatusUnauthorized, cause, msgCodeRequired)
		}
		return refuse(api.CodeUnauthenticated, http.StatusUnauthorized, cause, msgLoginFailed)
	}
	if a.throttleLocked(ctx, req.User, clientAddr, now) {
		identity.DummyVerify(req.Password) // the same cost as a real check
		return nil, fail(errThrottled, false)
	}
	var u *store.User
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		u, err = tx.GetUser(req.User)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		identity.DummyVerify(req.Password)
		return nil, fail(fmt.Errorf("%w (unknown user)", ErrBadCredentials), true)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: login %q: %w", req.User, err)
	}
	if !u.DisabledAt.IsZero() {
		// Disabled answers like any other failure; the audit says why.
		identity.DummyVerify(req.Password)
		return nil, fail(ErrUserDisabled, true)
	}
	pwOK, err := identity.VerifyPassword(u.PasswordHash, req.Password)
	pwOK = pwOK && err == nil
	mfa := false
	var step int64
	if u.TOTPSecret != "" {
		if req.OTP == "" {
			// Not a guess of anything: the client asks for the code next.
			// Counting it would lock out every two-step login.
			return nil, fail(ErrOTPRequired, false)
		}
		secret, err := a.cfg.Secrets.open(u.TOTPSecret, u.Name)
		if err != nil {
			return nil, fmt.Errorf("ca: login %q: %w", req.User, err)
		}
		var otpErr error
		step, otpErr = identity.CheckTOTP(secret, req.OTP, now, u.TOTPLastStep)
		switch {
		case !pwOK:
			return nil, fail(ErrBadCredentials, true)
		case otpErr != nil:
			return nil, fail(ErrBadOTP, true)
		}
		mfa = true
	} else if !pwOK {
		return nil, fail(ErrBadCredentials, true)
	}
	token, sess, err := a.newSession(u.Name, u.Groups, mfa, "local", clientAddr, now)
	if err != nil {
		return nil, err
	}
	sess.Scope = req.Scope
	ev := store.AuditEvent{Type: "login", Actor: u.Name, Subject: u.Name, ClientAddr: clientAddr, Outcome: "ok",
		Details: map[string]string{"method": "password", "mfa": fmt.Sprint(mfa)}}
	if req.Scope != "" {
		ev.Details["scope"] = req.Scope
	}
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		cur, err := tx.GetUser(u.Name)
		if err != nil {
			return err
		}
		if !cur.DisabledAt.IsZero() { // disabled while this login ran
			return ErrUserDisabled
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
		return nil, fail(ErrBadOTP, true)
	}
	if errors.Is(err, ErrUserDisabled) { // disabled meanwhile
		return nil, fail(ErrUserDisabled, false)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: record login of %q: %w", u.Name, err)
	}
	a.throttleSucceed(ctx, u.Name, clientAddr)
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "login", slog.String("user", u.Name), slog.Bool("mfa", mfa), slog.String("client", clientAddr))
	return &api.LoginResponse{Token: token, User: u.Name, Groups: u.Groups, MFA: mfa, ExpiresAt: sess.ExpiresAt}, nil
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
	// An ID token logs in once: a token captured from a browser, a log or a
	// proxy cannot open a second session. It is remembered (as its hash)
	// until it expires, in the store, so a restart does not forget it.
	used := a.cfg.Store.Update(ctx, func(tx *store.Tx) error { return tx.UseToken(tokenID(rawIDToken), id.Expiry) })
	if errors.Is(used, store.ErrExists) {
		r := refuse(api.CodeUnauthenticated, http.StatusUnauthorized, ErrTokenReplayed, "this identity provider token was already used to log in: log in again")
		ev.Actor, ev.Subject = user, user
		a.auditRefusal(ctx, ev, r)
		return nil, r
	}
	if used != nil {
		return nil, fmt.Errorf("ca: record oidc token use: %w", used)
	}
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
	var s, parent *store.Session
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		if s, err = tx.GetSession(id); err != nil || s.Parent == "" {
			return err
		}
		parent, err = tx.GetSession(s.Parent)
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
	// A reader token ends with the login session it was made from.
	if parent != nil && !parent.Active(now) {
		return nil, unauth
	}
	if !a.cfg.Store.Shared() { // replicas: a revocation elsewhere would not reach this cache
		a.sessions.put(*s, gen)
	}
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

// SessionInfo describes a session to its owner, with what each of its
// tiers takes now (TierAccess).
func (a *Authority) SessionInfo(ctx context.Context, s *store.Session) *api.SessionInfo {
	id := policy.Identity{User: s.User, Groups: s.Groups, MFA: s.MFA}
	info := &api.SessionInfo{
		User: s.User, Groups: s.Groups, MFA: s.MFA, Source: sourceOf(s), ExpiresAt: s.ExpiresAt, Scope: s.Scope,
		Tiers: a.cfg.Policy.TiersFor(id),
	}
	if s.Scope != "" {
		return info
	}
	now := a.cfg.Now()
	for _, name := range info.Tiers {
		info.Access = append(info.Access, a.tierAccess(ctx, s, id, name, now))
	}
	return info
}

// tierAccess answers for one tier the session is entitled to: the checks
// Grant makes, each reported rather than the first only, then Grant itself
// for whatever else it refuses.
func (a *Authority) tierAccess(ctx context.Context, s *store.Session, id policy.Identity, tier string, now time.Time) api.TierAccess {
	t, ok := a.cfg.Policy.Tier(tier)
	if !ok {
		return api.TierAccess{Tier: tier, Reasons: []string{"unknown tier"}}
	}
	ta := api.TierAccess{Tier: tier, Principals: t.PrincipalsFor(id), MFARequired: t.MFA, OnCallRequired: t.RequiresOnCall}
	onCall, err := a.onCallNow(ctx, s.User, tier, now)
	if err != nil {
		ta.Reasons = append(ta.Reasons, "the on-call schedule cannot be read: refused for now")
	}
	ta.OnCall = onCall != nil
	if t.MFA && !s.MFA {
		fix := "log in again with your TOTP code (--otp CODE)"
		if sourceOf(s) == "oidc" {
			fix = "log in again with --oidc --mfa"
		}
		ta.Reasons = append(ta.Reasons, "needs MFA: "+fix)
	}
	if t.RequiresOnCall && onCall == nil && err == nil {
		ta.Reasons = append(ta.Reasons, "not on call: only whoever is on call gets it")
	}
	req := policy.Request{Identity: id, Tier: tier, OnCall: onCall, Now: now}
	ta.Approvals, _ = t.ApprovalsNeeded(req)
	if ta.Approvals > 0 {
		ta.Reasons = append(ta.Reasons, fmt.Sprintf("needs %d approval%s: sshward request --tier %s", ta.Approvals, plural(ta.Approvals), tier))
	}
	if len(ta.Reasons) == 0 {
		// source_address: client is decided per request; not a reason here.
		if _, err := a.cfg.Policy.Grant(req); err != nil && !errors.Is(err, policy.ErrClientAddr) {
			ta.Reasons = append(ta.Reasons, err.Error())
		}
	}
	ta.Available = len(ta.Reasons) == 0
	return ta
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
