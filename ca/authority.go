package ca

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/identity"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/tlsca"
)

// OIDCVerifier checks an ID token from the configured provider.
type OIDCVerifier interface {
	Verify(ctx context.Context, rawIDToken string) (*identity.OIDCIdentity, error)
}

// Config configures an Authority.
type Config struct {
	// Store holds users, sessions, certificates, tokens, revocations, audit.
	Store *store.DB
	// Policy is the parsed tier policy.
	Policy *policy.Policy
	// UserCAs maps each tier to its user-CA signer. Every policy tier needs one.
	UserCAs map[string]ssh.Signer
	// PreviousUserCAs are replaced user-CA keys still trusted (rotate.go).
	PreviousUserCAs map[string]PreviousKey
	// Keys, when set, rotates and retires user-CA keys (rotate.go).
	Keys KeyRotator
	// KeySet, when set, is the CA key set in a store shared by replicas
	// (keysync.go): rotations made through any replica reach this one.
	KeySet KeySet
	// HostCA signs host certificates.
	HostCA ssh.Signer
	// PreviousHostCA is the replaced host-CA key still trusted (rotate.go).
	PreviousHostCA PreviousKey
	// OIDC verifies ID tokens; nil disables OIDC login.
	OIDC OIDCVerifier
	// OIDCClient is what clients need to start an OIDC login (public).
	OIDCClient api.OIDCConfig
	// ApprovalPolicy, when set, reviews access requests (fail closed).
	ApprovalPolicy ApprovalPolicy
	// OnCall says who is on call; required when a tier uses it (oncall.go).
	OnCall OnCallSchedule
	// TLSRoot, when set, lets the CA mint TLS certificates for playback
	// servers that join (they then share the root clients already pin).
	TLSRoot *tlsca.Root
	// Secrets encrypts TOTP secrets at rest (NewSecretBox from the CA
	// passphrase). With it, New seals any secret still stored in clear.
	Secrets *SecretBox
	// Lockout sets the failed-login backoff; zero value = identity defaults.
	Lockout identity.Lockout
	// Backdate is how far ValidAfter is set in the past for clock skew
	// (default and maximum 1 minute).
	Backdate time.Duration
	// Now and Rand are injectable for tests (default time.Now, crypto/rand).
	Now  func() time.Time
	Rand io.Reader
	// Logger receives decisions (default: discard).
	Logger *slog.Logger
	// WorkloadHTTPClient fetches workload issuers' discovery documents and
	// keys (workload.go); default http.DefaultClient.
	WorkloadHTTPClient *http.Client
}

// Check names the first bad field.
func (c *Config) Check() error {
	switch {
	case c.Store == nil:
		return errors.New("ca: Config.Store is required")
	case c.Policy == nil:
		return errors.New("ca: Config.Policy is required")
	case c.HostCA == nil:
		return errors.New("ca: Config.HostCA is required")
	case c.Backdate < 0 || c.Backdate > time.Minute:
		return errors.New("ca: Config.Backdate must be between 0 and 1m")
	}
	for _, t := range c.Policy.Tiers {
		if c.UserCAs[t.Name] == nil {
			return fmt.Errorf("ca: Config.UserCAs has no signer for tier %q", t.Name)
		}
	}
	return c.checkOnCallConfig()
}

// Authority issues certificates. It is safe for concurrent use.
type Authority struct {
	*Admin
	cfg Config

	throttle *loginThrottle // failed logins per (name, address) and per address

	// lastSerial is the highest serial handed out (atomic; seeded from the
	// store at New so a restart with a clock set back never repeats one,
	// and raised to the store's high-water mark at least every
	// serialSync; see serial).
	lastSerial atomic.Uint64
	serialMu   sync.Mutex // one re-read of the high-water mark at a time
	serialRead time.Time  // when it was last read (monotonic); under serialMu

	oncall  onCallState  // wakes RunOnCall (oncall.go)
	terms   terminateHub // recent signed terminate orders (terminate.go)
	keys    keyState     // user-CA keys, swapped by rotation (rotate.go)
	keySync keySyncState // the shared key set's last read (keysync.go)

	workloads        *identity.WorkloadVerifier // workload issuers' keys (workload.go)
	workloadThrottle *loginThrottle             // refused workload tokens per address
}

// New returns an Authority.
func New(cfg Config) (*Authority, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Backdate == 0 {
		cfg.Backdate = time.Minute
	}
	adm, err := NewAdmin(AdminConfig{Store: cfg.Store, Policy: cfg.Policy, Now: cfg.Now, Rand: cfg.Rand, Logger: cfg.Logger, Secrets: cfg.Secrets})
	if err != nil {
		return nil, err
	}
	cfg.Now, cfg.Rand, cfg.Logger = adm.cfg.Now, adm.cfg.Rand, adm.cfg.Logger
	if cfg.Lockout == (identity.Lockout{}) {
		cfg.Lockout = identity.Lockout{Threshold: 5, Base: 30 * time.Second, Max: 15 * time.Minute}
	}
	a := &Authority{Admin: adm, cfg: cfg, throttle: newLoginThrottle(cfg.Lockout)}
	a.keys.init(cfg.UserCAs, cfg.PreviousUserCAs, cfg.HostCA, cfg.PreviousHostCA)
	a.initWorkloads()
	if n, err := adm.sealPlaintextSecrets(context.Background()); err != nil {
		return nil, err
	} else if n > 0 {
		cfg.Logger.Info("encrypted TOTP secrets stored in clear", "count", n)
	}
	if err := a.syncSerial(context.Background()); err != nil {
		return nil, err
	}
	return a, nil
}

// serialSync is how often serial re-reads the store's serial high-water
// mark: a tenth of the least time a certificate record stays in the store.
func (a *Authority) serialSync() time.Duration { return a.cfg.Store.CertKeepFloor() / 10 }

// syncSerial raises lastSerial to the store's high-water mark (the highest
// serial any replica ever recorded, also after its record left).
func (a *Authority) syncSerial(ctx context.Context) error {
	read := time.Now()
	var hw uint64
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		hw, err = tx.MaxSerial()
		return err
	})
	if err != nil {
		return fmt.Errorf("ca: read last serial: %w", err)
	}
	for last := a.lastSerial.Load(); last < hw && !a.lastSerial.CompareAndSwap(last, hw); last = a.lastSerial.Load() {
	}
	a.serialRead = read
	return nil
}

// Trust returns the public trust material (public endpoint).
func (a *Authority) Trust(playback string) *api.TrustResponse {
	out := &api.TrustResponse{UserCA: map[string]string{}, HostCA: authorizedKey(a.hostCA().PublicKey()), Playback: playback}
	for _, k := range a.HostCAKeys() {
		out.HostCAKeys = append(out.HostCAKeys, authorizedKey(k))
	}
	for _, t := range a.cfg.Policy.Tiers {
		out.UserCA[t.Name] = authorizedKey(a.userCA(t.Name).PublicKey())
		if out.UserCAKeys == nil {
			out.UserCAKeys = map[string][]string{}
		}
		for _, k := range a.TrustedUserCAs(t.Name) {
			out.UserCAKeys[t.Name] = append(out.UserCAKeys[t.Name], authorizedKey(k))
		}
		out.Tiers = append(out.Tiers, api.TierInfo{
			Name: t.Name, Hosts: t.Hosts, MFA: t.MFA, Approvals: t.Approvals,
			TTL: api.Duration(t.TTL), MaxTTL: api.Duration(t.MaxTTL), TrustedOn: t.TrustedOn,
			ApprovalsWaivable: t.ApprovalsWaivable(),
			RequiresOnCall:    t.RequiresOnCall, OnCallApprovals: t.OnCallApprovals,
		})
	}
	return out
}

// IssueUserCert signs a user certificate for the session's identity.
func (a *Authority) IssueUserCert(ctx context.Context, sess *store.Session, req api.CertRequest, clientAddr string) (*api.CertResponse, error) {
	ev := store.AuditEvent{Type: "cert.issue", Actor: sess.User, Subject: sess.User, Tier: req.Tier, ClientAddr: clientAddr, RequestID: req.RequestID}
	resp, err := a.issueUserCert(ctx, sess, req, clientAddr, &ev)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return resp, nil
}

func (a *Authority) issueUserCert(ctx context.Context, sess *store.Session, req api.CertRequest, clientAddr string, ev *store.AuditEvent) (*api.CertResponse, error) {
	if err := req.Check(); err != nil {
		return nil, badRequest(err, "certificate request: %v", err)
	}
	pub, err := parseClientKey(req.PublicKey)
	if err != nil {
		return nil, err
	}
	// An approved access request buys exactly one certificate (requests.go);
	// without one, a tier that needs approvals refuses in Grant.
	var ar *store.AccessRequest
	if req.RequestID != "" {
		if ar, err = a.requestForCert(ctx, sess, &req); err != nil {
			return nil, err
		}
		ev.RequestID = ar.ID
	}
	scope, err := certScope(&req, ar)
	if err != nil {
		return nil, err
	}
	now := a.cfg.Now()
	onCall, err := a.onCallNow(ctx, sess.User, req.Tier, now)
	if err != nil {
		return nil, err
	}
	grant, err := a.cfg.Policy.Grant(policy.Request{
		Scope:      scope,
		Now:        now,
		Identity:   policy.Identity{User: sess.User, Groups: sess.Groups, MFA: sess.MFA},
		Tier:       req.Tier,
		Principals: req.Principals,
		TTL:        time.Duration(req.TTL),
		ClientAddr: clientAddr,
		RequestID:  req.RequestID,
		Approved:   a.requestApproved(ar),
		OnCall:     onCall,
	})
	if err != nil {
		return nil, policyRefusal(err)
	}
	if ar != nil {
		maps.Copy(grant.Extensions, requestExtensions(ar))
	}
	signer := a.userCA(grant.Tier)
	reqID := grant.RequestID
	if reqID == "" {
		reqID = "-"
	}
	for attempt := 0; ; attempt++ {
		serial, err := a.serial(ctx)
		if err != nil {
			return nil, err
		}
		keyID := fmt.Sprintf("%s@%s tier=%s req=%s serial=%d", sess.User, sourceOf(sess), grant.Tier, reqID, serial)
		line, cert, rec, err := a.signUserCert(signer, pub, grant, serial, keyID, sess.User, clientAddr, now)
		if err != nil {
			return nil, err
		}
		ev.Serial, ev.KeyID, ev.Tier, ev.Outcome = serial, cert.KeyId, grant.Tier, "ok"
		ev.Details = map[string]string{"principals": joinComma(grant.Principals), "valid_before": rec.ValidBefore.Format(time.RFC3339), "key": rec.PublicKeyFP}
		onCallDetails(ev, grant)
		if !grant.Scope.IsZero() {
			ev.Details["scope"] = grant.Scope.String()
		}
		evCopy := *ev
		err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
			// The session (and its user) may have been revoked, removed or
			// disabled since it was authenticated: a certificate recorded
			// after that would escape the revocation (revocations.go).
			if err := sessionStillLive(tx, sess.ID); err != nil {
				return err
			}
			// Another replica may have rotated the tier's key (keysync.go).
			if err := a.stillSigns(tx, UserKey(grant.Tier), signer); err != nil {
				return err
			}
			if err := tx.PutCert(rec); err != nil {
				return err
			}
			if err := putOnCallGrant(tx, grant, rec); err != nil {
				return err
			}
			if err := a.appendAudit(tx, evCopy); err != nil {
				return err
			}
			if ar != nil { // same transaction: single use holds under races and batch re-runs
				return a.markIssued(tx, ar.ID, serial, cert.KeyId, now, evCopy)
			}
			return nil
		})
		if errors.Is(err, store.ErrDuplicateSerial) && attempt < 3 {
			continue
		}
		if errors.Is(err, ErrKeysChanged) && attempt < 3 {
			// Sign again with the key the store holds now.
			if err := a.SyncKeys(ctx); err != nil {
				return nil, err
			}
			signer = a.userCA(grant.Tier)
			continue
		}
		if errors.Is(err, ErrSessionInvalid) {
			return nil, refuse(api.CodeUnauthenticated, http.StatusUnauthorized, err, "your sshward session is missing, expired or revoked: run sshward login")
		}
		if err != nil {
			return nil, fmt.Errorf("ca: record user cert %d: %w", serial, err)
		}
		a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "issued user certificate",
			slog.String("user", sess.User), slog.String("tier", grant.Tier), slog.Uint64("serial", serial),
			slog.String("key_id", cert.KeyId), slog.String("client", clientAddr))
		if grant.OnCall != nil {
			a.KickOnCall() // RunOnCall learns this shift's end
		}
		return &api.CertResponse{
			Certificate: string(line),
			Serial:      serial, KeyID: cert.KeyId, Tier: grant.Tier, Principals: grant.Principals,
			ValidAfter: rec.ValidAfter, ValidBefore: rec.ValidBefore,
		}, nil
	}
}

// signUserCert signs a user certificate of grant for pub and returns its
// authorized_keys line, the certificate and the record the store keeps.
func (a *Authority) signUserCert(signer ssh.Signer, pub ssh.PublicKey, grant *policy.Grant, serial uint64, keyID, identity, clientAddr string, now time.Time) ([]byte, *ssh.Certificate, *store.CertRecord, error) {
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          serial,
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: grant.Principals,
		ValidAfter:      uint64(now.Add(-a.cfg.Backdate).Unix()),
		ValidBefore:     uint64(now.Add(grant.TTL).Unix()),
		Permissions:     ssh.Permissions{CriticalOptions: grant.CriticalOptions, Extensions: grant.Extensions},
	}
	line, err := signCertLine(a.cfg.Rand, signer, cert)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca: sign user cert for %q: %w", identity, err)
	}
	rec := &store.CertRecord{
		Serial: serial, KeyID: cert.KeyId, Kind: "user", Tier: grant.Tier, Identity: identity,
		Principals: grant.Principals, ValidAfter: time.Unix(int64(cert.ValidAfter), 0).UTC(),
		ValidBefore: time.Unix(int64(cert.ValidBefore), 0).UTC(), IssuedAt: now.UTC(),
		PublicKeyFP: ssh.FingerprintSHA256(pub), RequestID: grant.RequestID, ClientAddr: clientAddr,
	}
	return line, cert, rec, nil
}

func sourceOf(s *store.Session) string {
	if s.Source == "" {
		return "local"
	}
	return s.Source
}

// serial returns a fresh certificate serial: milliseconds since the epoch
// in the high bits and 20 random bits below, forced strictly above the last
// one this CA handed out. Serials are unique, non-zero (PROTOCOL.krl cannot
// revoke serial 0), below 2^63 (tools print them signed) and increasing, so
// the store appends at the right edge of its B+tree instead of splitting
// random pages: that halves the write cost per issuance. A duplicate across
// CA replicas is still caught by the store (ErrDuplicateSerial → re-sign).
//
// Unique also after certificate records leave the store (etcd,
// EtcdOptions.CertKeep), whatever the replicas' clocks say. Say serial S
// was recorded at t1 and a replica draws S again at t2 and records it. The
// record of S must be gone by then, or the commit finds it
// (ErrDuplicateSerial), and a record stays at least store.MinCertKeep, so
// t1 + K < t2 (K = Store.CertKeepFloor(), 10 minutes unless CertKeep is
// shorter). This replica re-read the store's high-water mark (which never
// goes down and was >= S from t1 on) within K/10 before drawing, on its
// monotonic clock, so after t1 as long as the draw reaches the store
// within 0.9 K (the store gives up long before); then its lastSerial >= S,
// and it draws above S.
// A restart seeds lastSerial from the same mark.
func (a *Authority) serial(ctx context.Context) (uint64, error) {
	a.serialMu.Lock()
	if time.Since(a.serialRead) >= a.serialSync() {
		if err := a.syncSerial(ctx); err != nil {
			a.serialMu.Unlock()
			return 0, err
		}
	}
	a.serialMu.Unlock()
	var b [4]byte
	if _, err := io.ReadFull(a.cfg.Rand, b[:]); err != nil {
		return 0, fmt.Errorf("ca: draw serial: %w", err)
	}
	cand := (uint64(a.cfg.Now().UnixMilli())<<20 | uint64(beUint32(b[:]))&(1<<20-1)) &^ (1 << 63)
	for {
		last := a.lastSerial.Load()
		next := max(cand, last+1)
		if a.lastSerial.CompareAndSwap(last, next) {
			return next, nil
		}
	}
}

// auditRefusal records a refused request; the refusal itself is what the
// caller returns, so a failure to audit is only logged.
func (a *Authority) auditRefusal(ctx context.Context, ev store.AuditEvent, cause error) {
	ev.Outcome = "refused"
	ev.Reason = refusalText(cause)
	if err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error { return a.appendAudit(tx, ev) }); err != nil {
		a.cfg.Logger.Error("audit refusal", "type", ev.Type, "err", err)
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "refused", slog.String("type", ev.Type), slog.String("user", ev.Actor),
		slog.String("tier", ev.Tier), slog.String("reason", ev.Reason), slog.String("client", ev.ClientAddr))
}

func refusalText(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		if r.Audit != "" {
			return r.Audit
		}
		return r.Message
	}
	return err.Error()
}

// allowedKeyTypes are the client key types the CA signs. DSA is refused
// (OpenSSH removed it); RSA needs at least 2048 bits.
var allowedKeyTypes = []string{
	ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256, ssh.KeyAlgoRSA,
}

func parseClientKey(s string) (ssh.PublicKey, error) {
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, badRequest(err, "public_key is not an OpenSSH public key (authorized_keys format)")
	}
	if len(rest) > 0 && len(trimSpace(rest)) > 0 {
		return nil, badRequest(nil, "public_key must hold exactly one key")
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return nil, refuse(api.CodeKeyType, http.StatusBadRequest, nil, "public_key is a certificate: send the plain public key")
	}
	if !slices.Contains(allowedKeyTypes, pub.Type()) {
		return nil, refuse(api.CodeKeyType, http.StatusBadRequest, nil, "key type %s is not supported: use ed25519 (ssh-keygen -t ed25519)", pub.Type())
	}
	if pub.Type() == ssh.KeyAlgoRSA {
		if bits := rsaBits(pub); bits < 2048 {
			return nil, refuse(api.CodeKeyType, http.StatusBadRequest, nil, "RSA key of %d bits is too weak (minimum 2048): use ed25519 (ssh-keygen -t ed25519)", bits)
		}
	}
	return pub, nil
}

// policyRefusal turns a policy error into a user-facing refusal.
func policyRefusal(err error) error {
	var (
		perr *policy.PrincipalError
		terr *policy.TTLError
	)
	switch {
	case errors.Is(err, policy.ErrUnknownTier):
		return refuse(api.CodeUnknownTier, http.StatusBadRequest, err, "%s", trimPkg(err))
	case errors.Is(err, policy.ErrMFARequired):
		return refuse(api.CodeMFARequired, http.StatusForbidden, err, "%s", trimPkg(err))
	case errors.As(err, &perr):
		return refuse(api.CodePrincipal, http.StatusForbidden, err, "%s", trimPkg(err))
	case errors.As(err, &terr):
		return refuse(api.CodeTTL, http.StatusBadRequest, err, "%s", trimPkg(err))
	case errors.Is(err, policy.ErrNotEntitled), errors.Is(err, policy.ErrNoPrincipals), errors.Is(err, policy.ErrApprovalRequired):
		return refuse(api.CodeForbidden, http.StatusForbidden, err, "%s", trimPkg(err))
	}
	return badRequest(err, "%s", trimPkg(err))
}
