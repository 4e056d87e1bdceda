package ca

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/identity"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
)

// AdminConfig configures an Admin.
type AdminConfig struct {
	Store  *store.DB
	Policy *policy.Policy
	// Issuer names the TOTP issuer shown in authenticator apps (default "sshward").
	Issuer string
	Now    func() time.Time
	Rand   io.Reader
	Logger *slog.Logger
	// Secrets encrypts TOTP secrets in the store. Nil (no CA passphrase
	// given, e.g. an offline admin verb): new secrets are stored in clear
	// and sealed by the next CA start that has the passphrase.
	Secrets *SecretBox
}

// Admin runs the administrative verbs that need no signing key: users, join
// tokens, revocation, sessions and the audit log. It works on a store opened
// by the running CA (through its admin socket) or directly when it is down.
type Admin struct {
	cfg      AdminConfig
	sessions sessionCache
	revs     revocationHub // wakes revocation watchers after each commit (revocations.go)
}

// NewAdmin returns an Admin.
func NewAdmin(cfg AdminConfig) (*Admin, error) {
	if cfg.Store == nil {
		return nil, errors.New("ca: AdminConfig.Store is required")
	}
	if cfg.Policy == nil {
		return nil, errors.New("ca: AdminConfig.Policy is required")
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "sshward"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Admin{cfg: cfg}
	// Replicas: a revocation committed through another CA wakes this
	// one's watchers too (a no-op on a bbolt file, whose only writer is
	// this process).
	cfg.Store.OnRevocationsChanged(a.revs.publish)
	return a, nil
}

// appendAudit stamps and appends an audit event inside tx.
func (a *Admin) appendAudit(tx *store.Tx, ev store.AuditEvent) error {
	if ev.Time.IsZero() {
		ev.Time = a.cfg.Now().UTC()
	}
	return tx.AppendAudit(&ev)
}

// AddUserRequest adds a local user.
type AddUserRequest struct {
	Name     string   `json:"name"`
	Groups   []string `json:"groups"`
	Password string   `json:"password"`
	TOTP     bool     `json:"totp"`
	By       string   `json:"-"`
}

// AddUserResult carries the TOTP enrolment, shown once.
type AddUserResult struct {
	Name       string   `json:"name"`
	Groups     []string `json:"groups"`
	TOTPSecret string   `json:"totp_secret,omitempty"`
	TOTPURL    string   `json:"totp_url,omitempty"`
	// TOTPStoredInClear: no CA passphrase was at hand, so the secret waits
	// in clear until the CA next starts (which encrypts it).
	TOTPStoredInClear bool `json:"totp_stored_in_clear,omitempty"`
}

// UserInfo is a user as listed (no secrets).
type UserInfo struct {
	Name        string    `json:"name"`
	Groups      []string  `json:"groups"`
	TOTP        bool      `json:"totp"`
	Failures    int       `json:"failures"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	DisabledAt  time.Time `json:"disabled_at,omitzero"`
	CreatedAt   time.Time `json:"created_at"`
}

// AddUser creates a local user with a password (and a TOTP secret).
func (a *Admin) AddUser(ctx context.Context, req AddUserRequest) (*AddUserResult, error) {
	if !policy.IsValidPrincipal(req.Name) {
		return nil, badRequest(nil, "user name %q is not a valid login name (letters, digits, . _ -; at most 32)", req.Name)
	}
	if len(req.Password) < 8 {
		return nil, badRequest(nil, "the password must have at least 8 characters")
	}
	groups := cleanList(req.Groups)
	hash, err := identity.HashPassword(req.Password, a.cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("ca: add user %q: %w", req.Name, err)
	}
	res := &AddUserResult{Name: req.Name, Groups: groups}
	if req.TOTP {
		if res.TOTPSecret, res.TOTPURL, err = identity.NewTOTP(a.cfg.Issuer, req.Name); err != nil {
			return nil, fmt.Errorf("ca: add user %q: %w", req.Name, err)
		}
	}
	stored := res.TOTPSecret
	if stored != "" {
		if a.cfg.Secrets != nil {
			if stored, err = a.cfg.Secrets.Seal(stored, req.Name); err != nil {
				return nil, err
			}
		} else {
			res.TOTPStoredInClear = true
		}
	}
	now := a.cfg.Now().UTC()
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		if _, err := tx.GetUser(req.Name); err == nil {
			return ErrUserExists
		}
		u := &store.User{Name: req.Name, Groups: groups, PasswordHash: hash, TOTPSecret: stored, CreatedAt: now, UpdatedAt: now}
		if err := tx.PutUser(u); err != nil {
			return err
		}
		return a.appendAudit(tx, store.AuditEvent{Type: "user.add", Actor: orAdmin(req.By), Subject: req.Name, Outcome: "ok",
			Details: map[string]string{"groups": joinComma(groups), "totp": fmt.Sprint(req.TOTP)}})
	})
	if errors.Is(err, ErrUserExists) {
		return nil, refuse(api.CodeBadRequest, http.StatusConflict, err, "user %s already exists", req.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: add user %q: %w", req.Name, err)
	}
	return res, nil
}

// ListUsers lists local users without secrets.
func (a *Admin) ListUsers(ctx context.Context) ([]UserInfo, error) {
	var out []UserInfo
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		us, err := tx.ListUsers()
		for _, u := range us {
			out = append(out, UserInfo{Name: u.Name, Groups: u.Groups, TOTP: u.TOTPSecret != "", Failures: u.Failures, LockedUntil: u.LockedUntil, DisabledAt: u.DisabledAt, CreatedAt: u.CreatedAt})
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ca: list users: %w", err)
	}
	return out, nil
}

// RemoveUser deletes a user and, in the same transaction, revokes every
// unexpired certificate issued to them and every CA session they hold
// (revokeUser): a removed user is out at once, not when the certificate
// expires.
func (a *Admin) RemoveUser(ctx context.Context, name, by string) error {
	now := a.cfg.Now().UTC()
	var res RevokeResult
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		res = RevokeResult{}
		if _, err := tx.GetUser(name); err != nil {
			return ErrUserNotFound
		}
		if err := tx.DeleteUser(name); err != nil {
			return err
		}
		return a.revokeUser(tx, name, "", "user removed", orAdmin(by), now, &res, func(n int) store.AuditEvent {
			return store.AuditEvent{Type: "user.remove", Actor: orAdmin(by), Subject: name, Outcome: "ok", Reason: "user removed",
				Details: map[string]string{"sessions_revoked": fmt.Sprint(res.Sessions), "certs_revoked": fmt.Sprint(n)}}
		})
	})
	a.sessions.dropUser(name)
	if errors.Is(err, ErrUserNotFound) {
		return refuse(api.CodeNotFound, http.StatusNotFound, err, "no user named %s", name)
	}
	if err != nil {
		return fmt.Errorf("ca: remove user %q: %w", name, err)
	}
	a.revs.publish()
	a.cfg.Logger.Info("user removed", "user", name, "serials_revoked", res.Serials, "sessions_revoked", res.Sessions, "by", orAdmin(by))
	return nil
}

// SetPassword replaces a user's password and clears a lockout.
func (a *Admin) SetPassword(ctx context.Context, name, password, by string) error {
	if len(password) < 8 {
		return badRequest(nil, "the password must have at least 8 characters")
	}
	hash, err := identity.HashPassword(password, a.cfg.Rand)
	if err != nil {
		return fmt.Errorf("ca: set password: %w", err)
	}
	now := a.cfg.Now().UTC()
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		u, err := tx.GetUser(name)
		if err != nil {
			return ErrUserNotFound
		}
		u.PasswordHash, u.Failures, u.LockedUntil, u.UpdatedAt = hash, 0, time.Time{}, now
		if err := tx.PutUser(u); err != nil {
			return err
		}
		return a.appendAudit(tx, store.AuditEvent{Type: "user.passwd", Actor: orAdmin(by), Subject: name, Outcome: "ok"})
	})
	if errors.Is(err, ErrUserNotFound) {
		return refuse(api.CodeNotFound, http.StatusNotFound, err, "no user named %s", name)
	}
	return err
}

// JoinTokenRequest asks for a one-time join token.
type JoinTokenRequest struct {
	Kind  string        `json:"kind"` // "host" (default) or "playback"
	Names []string      `json:"names"`
	Tier  string        `json:"tier"`
	TTL   time.Duration `json:"ttl"`
	By    string        `json:"-"`
}

// JoinTokenResult is the token, shown once.
type JoinTokenResult struct {
	Token     string    `json:"token"`
	Kind      string    `json:"kind"`
	Names     []string  `json:"names"`
	Tier      string    `json:"tier,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// DefaultJoinTokenTTL is how long a join token lives unless asked otherwise.
const DefaultJoinTokenTTL = 30 * time.Minute

// NewJoinToken makes a single-use token a host (or playback server) trades
// for its certificate.
func (a *Admin) NewJoinToken(ctx context.Context, req JoinTokenRequest) (*JoinTokenResult, error) {
	if req.Kind == "" {
		req.Kind = "host"
	}
	names := cleanList(req.Names)
	switch {
	case req.Kind != "host" && req.Kind != "playback":
		return nil, badRequest(nil, "join token kind must be host or playback")
	case len(names) == 0:
		return nil, badRequest(nil, "a join token needs at least one name (--host NAME)")
	case req.TTL < 0 || req.TTL > 24*time.Hour:
		return nil, badRequest(nil, "join token ttl must be between 1s and 24h")
	}
	for _, n := range names {
		if !validHostName(n) {
			return nil, badRequest(nil, "host name %q is not valid", n)
		}
	}
	if req.Kind == "host" {
		if _, ok := a.cfg.Policy.Tier(req.Tier); !ok {
			return nil, refuse(api.CodeUnknownTier, http.StatusBadRequest, nil, "unknown tier %q (known: %s)", req.Tier, strings.Join(a.tierNames(), ", "))
		}
	}
	if req.TTL == 0 {
		req.TTL = DefaultJoinTokenTTL
	}
	var raw [24]byte
	if _, err := io.ReadFull(a.cfg.Rand, raw[:]); err != nil {
		return nil, fmt.Errorf("ca: join token: %w", err)
	}
	token := "swj_" + base64.RawURLEncoding.EncodeToString(raw[:])
	now := a.cfg.Now().UTC()
	jt := &store.JoinToken{ID: tokenID(token), Kind: req.Kind, Names: names, Tier: req.Tier, CreatedAt: now, ExpiresAt: now.Add(req.TTL), CreatedBy: orAdmin(req.By)}
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		if err := tx.PutJoinToken(jt); err != nil {
			return err
		}
		return a.appendAudit(tx, store.AuditEvent{Type: "join-token.create", Actor: orAdmin(req.By), Subject: names[0], Tier: req.Tier, Outcome: "ok",
			Details: map[string]string{"kind": req.Kind, "names": joinComma(names), "expires_at": jt.ExpiresAt.Format(time.RFC3339)}})
	})
	if err != nil {
		return nil, fmt.Errorf("ca: join token: %w", err)
	}
	return &JoinTokenResult{Token: token, Kind: req.Kind, Names: names, Tier: req.Tier, ExpiresAt: jt.ExpiresAt}, nil
}

// RevokeRequest revokes by serial, key id, or every unexpired certificate of
// a user (with their CA sessions).
type RevokeRequest struct {
	Serial uint64 `json:"serial,omitempty"`
	KeyID  string `json:"key_id,omitempty"`
	User   string `json:"user,omitempty"`
	Tier   string `json:"tier,omitempty"`
	Reason string `json:"reason,omitempty"`
	By     string `json:"-"`
}

// RevokeResult reports what was revoked.
type RevokeResult struct {
	Serials  []uint64 `json:"serials,omitempty"`
	KeyIDs   []string `json:"key_ids,omitempty"`
	Tiers    []string `json:"tiers"`
	Sessions int      `json:"sessions_revoked,omitempty"`
}

// Revoke records a revocation; the tier KRLs and agent lists change with it.
func (a *Admin) Revoke(ctx context.Context, req RevokeRequest) (*RevokeResult, error) {
	n := 0
	for _, set := range []bool{req.Serial != 0, req.KeyID != "", req.User != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, badRequest(nil, "revoke needs exactly one of --serial, --key-id or --user")
	}
	if req.Tier != "" {
		if _, ok := a.cfg.Policy.Tier(req.Tier); !ok {
			return nil, refuse(api.CodeUnknownTier, http.StatusBadRequest, nil, "unknown tier %q", req.Tier)
		}
	}
	now := a.cfg.Now().UTC()
	res := &RevokeResult{}
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		*res = RevokeResult{}
		var revs []store.Revocation
		switch {
		case req.Serial != 0:
			tier := req.Tier
			if rec, err := tx.GetCert(req.Serial); err == nil {
				tier = rec.Tier
				if rec.Kind == "host" {
					tier = HostRevocationTier
				}
			}
			if tier == "" {
				return ErrNotFound
			}
			revs = append(revs, store.Revocation{Tier: tier, Serial: req.Serial})
		case req.KeyID != "":
			recs, err := tx.CertsByKeyID(req.KeyID)
			if err != nil {
				return err
			}
			tiers := []string{}
			for _, r := range recs {
				if r.Kind == store.CertKindHost {
					tiers = append(tiers, HostRevocationTier)
					continue
				}
				tiers = append(tiers, r.Tier)
			}
			if req.Tier != "" {
				tiers = []string{req.Tier}
			} else if len(tiers) == 0 {
				tiers = a.tierNames() // unknown key id: revoke it everywhere
			}
			slices.Sort(tiers)
			for _, t := range slices.Compact(tiers) {
				revs = append(revs, store.Revocation{Tier: t, KeyID: req.KeyID})
			}
		case req.User != "":
			return a.revokeUser(tx, req.User, req.Tier, req.Reason, orAdmin(req.By), now, res, nil)
		}
		for _, r := range revs {
			r.Reason, r.At, r.By = req.Reason, now, orAdmin(req.By)
			if err := tx.AddRevocation(&r); err != nil {
				return err
			}
			if r.Serial != 0 {
				res.Serials = append(res.Serials, r.Serial)
			}
			if r.KeyID != "" && !slices.Contains(res.KeyIDs, r.KeyID) {
				res.KeyIDs = append(res.KeyIDs, r.KeyID)
			}
			if !slices.Contains(res.Tiers, r.Tier) {
				res.Tiers = append(res.Tiers, r.Tier)
			}
			if err := a.appendAudit(tx, store.AuditEvent{Type: "revoke", Actor: orAdmin(req.By), Subject: firstNonEmpty(req.User, r.KeyID, fmt.Sprint(r.Serial)),
				Tier: r.Tier, Serial: r.Serial, KeyID: r.KeyID, Outcome: "ok", Reason: req.Reason}); err != nil {
				return err
			}
		}
		return nil
	})
	if req.User != "" {
		a.sessions.dropUser(req.User)
	}
	if errors.Is(err, ErrNotFound) {
		return nil, refuse(api.CodeNotFound, http.StatusNotFound, err, "serial %d was not issued by this CA: pass --tier to revoke it anyway", req.Serial)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: revoke: %w", err)
	}
	a.revs.publish()
	a.cfg.Logger.Info("revoked", "serials", res.Serials, "key_ids", res.KeyIDs, "tiers", res.Tiers, "by", orAdmin(req.By))
	return res, nil
}

// HostRevocationTier is the revocation bucket for host certificates; host
// auth (renewal, uploads) refuses what is in it.
const HostRevocationTier = "@hosts"

// Audit lists audit events.
func (a *Admin) Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	return a.cfg.Store.Audit(ctx, f)
}

// VerifyAudit checks the audit hash chain.
func (a *Admin) VerifyAudit(ctx context.Context) (store.AuditReport, error) {
	return a.cfg.Store.VerifyAudit(ctx)
}

// Sessions lists CA login sessions (no tokens: only their hashes exist).
func (a *Admin) Sessions(ctx context.Context) ([]store.Session, error) {
	var out []store.Session
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		out, err = tx.ListSessions()
		return err
	})
	return out, err
}

func (a *Admin) tierNames() []string {
	var out []string
	for _, t := range a.cfg.Policy.Tiers {
		out = append(out, t.Name)
	}
	return out
}

func orAdmin(by string) string {
	if by == "" {
		return "admin"
	}
	return by
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" && v != "0" {
			return v
		}
	}
	return ""
}

func cleanList(in []string) []string {
	out := []string{}
	for _, s := range in {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// validHostName accepts DNS names, wildcard-free, and IP literals.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == ':' || r == '_') {
			return false
		}
	}
	return true
}
