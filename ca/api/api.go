package api

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Paths of the CA's HTTPS API.
const (
	PathHealth    = "/healthz"
	PathReady     = "/readyz" // 200 when the CA can issue, 503 with the reason otherwise
	PathTrust     = "/v1/trust"
	PathKRL       = "/v1/krl/" // + tier
	PathLogin     = "/v1/login"
	PathLoginOIDC = "/v1/login/oidc" // GET: provider config; POST: exchange an ID token
	PathSession   = "/v1/session"    // GET: who am I; DELETE: log out
	// PathReaderToken exchanges a login session for a short-lived token
	// scoped to reading recordings (POST), the only kind the playback
	// server accepts: it can never mint certificates.
	PathReaderToken = "/v1/session/reader"
	PathCert        = "/v1/cert"
	PathHostJoin    = "/v1/host/join"
	PathHostRenew   = "/v1/host/renew"
	PathHostRevoked = "/v1/host/revoked/" // + tier
)

// MaxBodyBytes bounds every JSON request body the CA accepts.
const MaxBodyBytes = 64 << 10

// Tier names used by the default policy.
const (
	TierStaging    = "staging"
	TierProduction = "production"
	TierBreakGlass = "break-glass"
)

// Certificate extensions that sshward adds to user certificates
// (PROTOCOL.certkeys: vendor extensions are name@domain). The agent reads them.
const (
	ExtTier        = "tier@sshward"              // tier name
	ExtRequestID   = "request-id@sshward"        // access request id, absent when none
	ExtRecordInput = "record-input@sshward"      // "yes" or "no"
	ExtOnRecFail   = "recording-failure@sshward" // "closed" or "open"
	ExtSingleUse   = "single-use@sshward"        // present when the cert may start one session only
	ExtEndOnExpiry = "end-on-expiry@sshward"     // present when sessions end at cert expiry/revocation
)

// Error codes carried in Error.Code; clients branch on these, never on text.
const (
	CodeBadRequest      = "bad_request"
	CodeUnauthenticated = "unauthenticated"
	CodeOTPRequired     = "otp_required"
	CodeLocked          = "locked"
	CodeForbidden       = "forbidden"
	CodeMFARequired     = "mfa_required"
	CodeNotFound        = "not_found"
	CodeUnknownTier     = "unknown_tier"
	CodePrincipal       = "principal_not_allowed"
	CodeKeyType         = "unsupported_key"
	CodeTTL             = "ttl_too_long"
	CodeTokenInvalid    = "token_invalid"
	CodeTooLarge        = "too_large"
	CodeInternal        = "internal"
)

// Error is the body of every non-2xx answer. Message is one sentence meant for
// the user (what was refused and how to fix it); it never holds secrets.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Status  int    `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// LoginRequest logs a local user in. OTP is the current TOTP code, if the
// user has one enrolled.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	OTP      string `json:"otp,omitempty"`
	// Scope, when ScopeReadRecordings, opens a reader session instead of a
	// login session: how the playback server logs browsers in without ever
	// holding a token that mints certificates.
	Scope string `json:"scope,omitempty"`
}

// Check names the first missing field.
func (r *LoginRequest) Check() error {
	switch {
	case r.Scope != "" && r.Scope != ScopeReadRecordings:
		return errors.New("scope must be empty or " + ScopeReadRecordings)
	case strings.TrimSpace(r.User) == "":
		return errors.New("user is required")
	case r.Password == "":
		return errors.New("password is required")
	case len(r.User) > 256 || len(r.Password) > 1024 || len(r.OTP) > 16:
		return errors.New("a field is too long")
	}
	return nil
}

// OIDCLoginRequest exchanges an ID token the client obtained from the
// identity provider (auth code + PKCE or device flow) for a CA session.
type OIDCLoginRequest struct {
	IDToken string `json:"id_token"`
}

// Check names the first missing field.
func (r *OIDCLoginRequest) Check() error {
	if r.IDToken == "" {
		return errors.New("id_token is required")
	}
	return nil
}

// OIDCConfig tells the client which provider to use. Public.
type OIDCConfig struct {
	Enabled  bool     `json:"enabled"`
	Issuer   string   `json:"issuer,omitempty"`
	ClientID string   `json:"client_id,omitempty"`
	Scopes   []string `json:"scopes,omitempty"`
	// MFAScopes are requested on top of Scopes when the user asks for a
	// multi-factor login (sshward login --oidc --mfa).
	MFAScopes []string `json:"mfa_scopes,omitempty"`
	// RedirectListen fixes the loopback address of the auth-code redirect
	// for providers that match redirect URIs exactly ("" = any free port).
	RedirectListen string `json:"redirect_listen,omitempty"`
}

// LoginResponse carries a CA session token (Bearer) and who it belongs to.
type LoginResponse struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	Groups    []string  `json:"groups"`
	MFA       bool      `json:"mfa"`
	ExpiresAt time.Time `json:"expires_at"`
}

// SessionInfo answers GET /v1/session.
type SessionInfo struct {
	User      string    `json:"user"`
	Groups    []string  `json:"groups"`
	MFA       bool      `json:"mfa"`
	Source    string    `json:"source"` // "local" or "oidc"
	ExpiresAt time.Time `json:"expires_at"`
	Tiers     []string  `json:"tiers"` // tiers this identity may ask for
	// Scope is "" for a login session, ScopeReadRecordings for a reader
	// token.
	Scope string `json:"scope,omitempty"`
	// Access says, per tier in Tiers, whether this session can get a
	// certificate now and what stands in the way (none for reader tokens).
	Access []TierAccess `json:"access,omitempty"`
}

// TierAccess is one tier's answer in SessionInfo.Access.
type TierAccess struct {
	Tier string `json:"tier"`
	// Available: `sshward cert --tier T` works now, without an access
	// request (the CA checks again at issuance).
	Available      bool     `json:"available"`
	Principals     []string `json:"principals,omitempty"`
	MFARequired    bool     `json:"mfa_required"`
	OnCallRequired bool     `json:"oncall_required"`
	OnCall         bool     `json:"oncall"`    // on call now, for tiers that use the schedule
	Approvals      int      `json:"approvals"` // an access request needs this many now
	// Reasons are what stands in the way, one short sentence each with the
	// fix ("needs MFA: log in again with --oidc --mfa", "needs 2 approvals:
	// sshward request --tier T", "not on call").
	Reasons []string `json:"reasons,omitempty"`
}

// ScopeReadRecordings is the scope of reader tokens (PathReaderToken): the
// CA answers only "who is this" (GET/DELETE PathSession) for them.
const ScopeReadRecordings = "read-recordings"

// CertRequest asks for a user certificate. PublicKey is in authorized_keys
// format. Principals, when set, must be a subset of what policy grants; TTL,
// when set, must not exceed the tier's max_ttl.
type CertRequest struct {
	Tier       string   `json:"tier"`
	PublicKey  string   `json:"public_key"`
	Principals []string `json:"principals,omitempty"`
	TTL        Duration `json:"ttl,omitempty"`
	RequestID  string   `json:"request_id,omitempty"`
	// Hosts and Labels scope the certificate (scope.go); with RequestID
	// the request's scope applies and these must be empty or equal to it.
	Hosts  []string          `json:"hosts,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Check validates the shape of the request (not policy).
func (r *CertRequest) Check() error {
	switch {
	case r.Tier == "":
		return errors.New("tier is required")
	case r.PublicKey == "":
		return errors.New("public_key is required")
	case len(r.Principals) > 64:
		return errors.New("too many principals")
	case r.TTL < 0:
		return errors.New("ttl must not be negative")
	}
	for _, p := range r.Principals {
		if p == "" || len(p) > 256 {
			return fmt.Errorf("principal %q is not valid", p)
		}
	}
	if _, err := (Scope{Hosts: r.Hosts, Labels: r.Labels}).Normalize(); err != nil {
		return err
	}
	return nil
}

// CertResponse carries an issued user certificate (authorized_keys format).
type CertResponse struct {
	Certificate string    `json:"certificate"`
	Serial      uint64    `json:"serial"`
	KeyID       string    `json:"key_id"`
	Tier        string    `json:"tier"`
	Principals  []string  `json:"principals"`
	ValidAfter  time.Time `json:"valid_after"`
	ValidBefore time.Time `json:"valid_before"`
}

// TrustResponse answers GET /v1/trust: the CA public keys (authorized_keys
// format) and the host patterns each tier covers.
type TrustResponse struct {
	UserCA map[string]string `json:"user_ca"`
	// UserCAKeys lists every trusted key of each tier, the signing one
	// first: two during a key rotation's overlap (api/rotate.go).
	UserCAKeys map[string][]string `json:"user_ca_keys,omitempty"`
	HostCA     string              `json:"host_ca"`
	// HostCAKeys lists every trusted host-CA key, the signing one first:
	// two during a host-CA rotation's overlap. Clients put each in an
	// @cert-authority line.
	HostCAKeys []string   `json:"host_ca_keys,omitempty"`
	Tiers      []TierInfo `json:"tiers"`
	// Playback is the registered playback server URL, if any (the one
	// that joined last).
	Playback string `json:"playback,omitempty"`
	// CAReplicas are the URLs the CA's replicas registered (sshward-ca
	// serve --advertise), PlaybackReplicas every playback server that
	// joined: clients and agents fail over to them (ca/replicas.go).
	CAReplicas       []string `json:"ca_replicas,omitempty"`
	PlaybackReplicas []string `json:"playback_replicas,omitempty"`
}

// TierInfo describes a tier to clients.
type TierInfo struct {
	Name      string   `json:"name"`
	Hosts     []string `json:"hosts,omitempty"`
	MFA       bool     `json:"mfa"`
	Approvals int      `json:"approvals"`
	TTL       Duration `json:"ttl"`
	MaxTTL    Duration `json:"max_ttl"`
	// TrustedOn lists the other tiers whose hosts accept this tier's
	// certificates (break-glass: production); the playback server accepts
	// a recording of this tier from those hosts.
	TrustedOn []string `json:"trusted_on,omitempty"`
	// RequiresOnCall and OnCallApprovals tie the tier to the on-call
	// schedule (policy requires_oncall, oncall_approvals; ExtOnCallUntil).
	RequiresOnCall  bool `json:"requires_oncall,omitempty"`
	OnCallApprovals *int `json:"oncall_approvals,omitempty"`
	// ApprovalsWaivable: an approval rule of the tier may ask fewer than
	// Approvals (read-only logins, a scope, business hours), so a client
	// without an approved request should still try (scope.go).
	ApprovalsWaivable bool `json:"approvals_waivable,omitempty"`
}

// JoinRequest exchanges a one-time join token for a host certificate.
type JoinRequest struct {
	Token     string `json:"token"`
	PublicKey string `json:"public_key"`
	Tier      string `json:"tier,omitempty"` // must match the token's tier when set
}

// Check names the first missing field.
func (r *JoinRequest) Check() error {
	switch {
	case r.Token == "":
		return errors.New("token is required")
	case r.PublicKey == "":
		return errors.New("public_key is required")
	}
	return nil
}

// RenewRequest renews a host certificate; the caller authenticates with its
// current host certificate (see HostAuth). PublicKey may name a new key.
type RenewRequest struct {
	PublicKey string `json:"public_key,omitempty"`
}

// HostCertResponse carries a host certificate.
type HostCertResponse struct {
	Certificate string    `json:"certificate"`
	Serial      uint64    `json:"serial"`
	Names       []string  `json:"names"`
	Tier        string    `json:"tier"`
	ValidBefore time.Time `json:"valid_before"`
	// UserCA holds the user-CA keys the host must trust for its tier.
	UserCA []string `json:"user_ca"`
	// UserCALimits says, per key in UserCA, the most a certificate it
	// signed may claim (see UserCALimit). Absent from CAs before issue 8.
	UserCALimits []UserCALimit `json:"user_ca_limits,omitempty"`
}

// RevocationList is what agents poll and cache: revoked serials and key ids
// of the user CAs a host of Tier trusts.
type RevocationList struct {
	Tier        string    `json:"tier"`
	Generation  uint64    `json:"generation"`
	GeneratedAt time.Time `json:"generated_at"`
	Serials     []uint64  `json:"serials"`
	KeyIDs      []string  `json:"key_ids"`
	// Seq is the CA's revocation log position the list includes: watch
	// from it (PathHostRevocationsWatch). Absent from CAs before issue 8.
	Seq uint64 `json:"seq,omitzero"`
	// MaxStale says, per tier whose certificates the list covers, how old
	// a host's copy may grow while the CA cannot be reached before the
	// host refuses new sessions of that tier (the tier's
	// revocation_max_stale); 0 means no bound. A tier missing here: the
	// CA did not say, and the agent applies its default.
	MaxStale map[string]Duration `json:"max_stale,omitempty"`
	// Notices holds, for revoked serials whose holder is told why (an
	// on-call shift that ended, api.OnCallEndedMessage), what the agent
	// shows on their live sessions. Revocation events carry the same.
	Notices map[uint64]string `json:"notices,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("15m") and also accepts a number of seconds.
type Duration time.Duration

// MarshalJSON writes "15m0s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// UnmarshalJSON reads "15m" or 900.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		v, err := time.ParseDuration(s[1 : len(s)-1])
		if err != nil {
			return fmt.Errorf("duration %s: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs int64
	if _, err := fmt.Sscan(s, &secs); err != nil {
		return fmt.Errorf("duration %s: want a string like \"15m\" or seconds", s)
	}
	*d = Duration(time.Duration(secs) * time.Second)
	return nil
}
