package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// Reasons a certificate is refused. They are logged and audited, never
// shown to the client (see deniedBanner).
const (
	reasonNotCertificate = "public key without a certificate"
	reasonHostCert       = "host certificate offered as a user certificate"
	reasonUntrustedCA    = "certificate signed by a CA this host does not trust"
	reasonBadSignature   = "certificate signature does not verify"
	reasonNoPrincipals   = "certificate has no principals"
	reasonPrincipal      = "login name is not among the certificate's principals"
	reasonNotYetValid    = "certificate not yet valid"
	reasonExpired        = "certificate expired"
	reasonUnbounded      = "certificate never expires or has no start time"
	reasonTooLong        = "certificate validity exceeds the tier's max_ttl"
	reasonCriticalOption = "certificate has an unknown critical option"
	reasonSourceAddress  = "client address does not match the certificate's source-address"
	reasonRevoked        = "certificate revoked"
	reasonSingleUse      = "single-use certificate already used"
	reasonSingleUseStore = "cannot record the use of a single-use certificate"
	reasonNoLocalUser    = "no local user for the principal"
	reasonNotSelf        = "the agent does not run as root and can serve only its own user"
	reasonChecker        = "refused by the certificate checker"
)

// unverified reports whether a refusal happens before the certificate's
// CA signature is verified: nothing the certificate says (key id, serial,
// principals, extensions) may then reach a log or an audit record, since
// anyone can write anything there. Only fingerprints are recorded.
func unverified(reason string) bool {
	switch reason {
	case reasonNotCertificate, reasonUntrustedCA, reasonBadSignature, reasonRetiredCA:
		return true
	}
	return false
}

// deniedBanner is what the client sees when a certificate of this host's
// CAs is refused: enough to know what to do, nothing about which check
// failed.
const deniedBanner = "sshward: access denied. Your certificate is not valid for this host, this user or this moment.\nGet a fresh one with `sshward cert`, or ask an administrator.\n"

// tentative reports whether a refusal may be one of several keys a client
// tries before the right one (plain keys, certificates of other tiers'
// CAs): OpenSSH offers a plain key before its certificate, and an agent
// holds certificates of several tiers. Such refusals show no banner and
// are logged as refusals only if the connection fails to authenticate.
func tentative(reason string) bool {
	return reason == reasonNotCertificate || reason == reasonUntrustedCA
}

// Standard critical options and extensions (OpenSSH PROTOCOL.certkeys).
const (
	optForceCommand   = "force-command"
	optSourceAddress  = "source-address"
	extPermitPTY      = "permit-pty"
	extPermitPortFwd  = "permit-port-forwarding"
	extPermitAgentFwd = "permit-agent-forwarding"
	extPermitUserRC   = "permit-user-rc"
)

var supportedCriticalOptions = []string{optForceCommand, optSourceAddress, api.CritScope}

// grant is what an admitted certificate allows on one connection. Built by
// the admission callback, read-only afterwards.
type grant struct {
	cert       *ssh.Certificate
	user       *User
	login      string // the principal, = the local user name
	identity   string // who the CA issued the certificate to
	tier       string
	requestID  string
	reason     string   // the access request's reason (reason@sshward)
	approvers  []string // who approved it (approvers@sshward)
	clientAddr string

	settings     TierSettings // the host's, overridden by the certificate
	singleUse    bool
	forceCommand string
	hasForce     bool
	permitPTY    bool
	permitPortFw bool
	permitAgent  bool
	permitUserRC bool
}

type grantKey struct{}

// connAuth is per-connection admission state.
type connAuth struct {
	id         string
	bannerSent atomic.Bool

	mu      sync.Mutex   // guards pending
	pending []AuditEvent // tentative refusals, see tentative
}

// settle logs the tentative refusals once authentication is over: as
// refusals when the connection failed, as a debug trace when another key
// got in.
func (s *Server) settle(ca *connAuth, authenticated bool) {
	ca.mu.Lock()
	pending := ca.pending
	ca.pending = nil
	ca.mu.Unlock()
	for _, ev := range pending {
		if authenticated {
			s.log.Debug("agent: key not accepted; another one was", "session_id", ev.SessionID,
				"serial", ev.Serial, "key_id", ev.KeyID, "principal", ev.Principal, "reason", ev.Reason)
			continue
		}
		s.logRefusal(ev)
	}
}

// refusal carries a logged reason through the SSH library; the client is
// shown only Message of the BannerError that wraps it.
type refusal struct{ reason string }

func (r *refusal) Error() string { return "agent: refused: " + r.reason }

// serverConfig builds the SSH server configuration for one connection:
// the current host certificate and admission callbacks bound to ca.
func (s *Server) serverConfig(ca *connAuth) *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			return s.admit(ca, c, key)
		},
		VerifiedPublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey, p *ssh.Permissions, _ string) (*ssh.Permissions, error) {
			return s.admitVerified(ca, c, p)
		},
		AuthLogCallback: func(_ ssh.ConnMetadata, _ string, err error) {
			// One banner per connection: clients offer several keys, and
			// the library sends a BannerError's message each time.
			var be *ssh.BannerError
			if errors.As(err, &be) && be.Message != "" && ca.bannerSent.Swap(true) {
				be.Message = ""
			}
		},
		ServerVersion: "SSH-2.0-sshward",
		MaxAuthTries:  6,
	}
	cfg.Ciphers = s.cfg.Ciphers
	cfg.AddHostKey(s.identity().certSigner)
	return cfg
}

// admit decides on an offered key. It runs before the client proves it
// holds the key, so it records nothing; admitVerified does.
func (s *Server) admit(ca *connAuth, c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, s.refuse(ca, c, nil, reasonNotCertificate, "key="+ssh.FingerprintSHA256(key))
	}
	g, reason, detail := s.checkCert(c, cert)
	if reason != "" {
		return nil, s.refuse(ca, c, cert, reason, detail)
	}
	return &ssh.Permissions{
		CriticalOptions: cert.CriticalOptions, // the library enforces source-address again
		Extensions:      cert.Extensions,
		ExtraData:       map[any]any{grantKey{}: g},
	}, nil
}

// checkCert applies every admission rule in an order that gives the most
// useful reason: the CA and its signature first, so that nothing logged
// comes from a forged certificate (see unverified); then the lifetime the
// tier allows; then our own checks; then the library's CertChecker as a
// last gate that must agree.
func (s *Server) checkCert(c ssh.ConnMetadata, cert *ssh.Certificate) (g *grant, reason, detail string) {
	id := s.identity()
	now := s.cfg.Now()
	fp := "key=" + ssh.FingerprintSHA256(cert.Key) + " ca=" + ssh.FingerprintSHA256(cert.SignatureKey)
	switch {
	case !id.trusts(cert.SignatureKey):
		if at, ok := s.retiredAt(id, cert.SignatureKey, now); ok {
			return nil, reasonRetiredCA, fp + " retired_at=" + at.UTC().Format(time.RFC3339)
		}
		return nil, reasonUntrustedCA, fp
	}
	if at, ok := s.retiredAt(id, cert.SignatureKey, now); ok {
		return nil, reasonRetiredCA, fp + " retired_at=" + at.UTC().Format(time.RFC3339)
	}
	switch {
	case verifySignature(cert) != nil:
		return nil, reasonBadSignature, fp
	case cert.CertType != ssh.UserCert:
		return nil, reasonHostCert, ""
	}
	if r, d := checkLifetime(cert, id.limitFor(cert.SignatureKey)); r != "" {
		return nil, r, d
	}
	switch {
	case len(cert.ValidPrincipals) == 0:
		// CertChecker would accept this certificate for any user.
		return nil, reasonNoPrincipals, ""
	case !slices.Contains(cert.ValidPrincipals, c.User()):
		return nil, reasonPrincipal, "login=" + c.User()
	}
	if r := checkValidity(cert, now); r != "" {
		return nil, r, fmt.Sprintf("valid_after=%d valid_before=%d now=%d", cert.ValidAfter, cert.ValidBefore, now.Unix())
	}
	for opt := range cert.CriticalOptions {
		if !slices.Contains(supportedCriticalOptions, opt) {
			return nil, reasonCriticalOption, opt
		}
	}
	if list, ok := cert.CriticalOptions[optSourceAddress]; ok && !sourceAddressAllows(list, c.RemoteAddr()) {
		return nil, reasonSourceAddress, "source-address=" + list
	}
	if s.revs.Load().revoked(cert) {
		return nil, reasonRevoked, ""
	}
	if targets := s.hostNotListed(cert); targets != nil {
		return nil, reasonHostNotListed, "hosts=" + strings.Join(targets, ",")
	}
	if r, d := s.checkScope(cert); r != "" {
		return nil, r, d
	}
	if r, d := s.checkRevocationFresh(cert); r != "" {
		return nil, r, d
	}
	if _, ok := cert.Extensions[api.ExtSingleUse]; ok && s.single.seenBefore(cert.Serial) {
		return nil, reasonSingleUse, ""
	}
	u, err := s.cfg.LookupUser(c.User())
	if err != nil {
		return nil, reasonNoLocalUser, err.Error()
	}
	if euid := os.Geteuid(); euid != 0 && int(u.UID) != euid {
		return nil, reasonNotSelf, ""
	}
	checker := &ssh.CertChecker{
		IsUserAuthority:          id.trusts,
		IsRevoked:                s.revs.Load().revoked,
		SupportedCriticalOptions: supportedCriticalOptions,
		Clock:                    func() time.Time { return checkerClock(cert, now) },
	}
	if _, err := checker.Authenticate(c, cert); err != nil {
		return nil, reasonChecker, err.Error()
	}
	return s.newGrant(c, cert, u), "", ""
}

// checkValidity applies the validity window with MaxClockSkew of tolerance
// before ValidAfter and none after ValidBefore.
func checkValidity(cert *ssh.Certificate, now time.Time) string {
	u := now.Unix()
	after := int64(cert.ValidAfter)
	if after < 0 || u+int64(MaxClockSkew/time.Second) < after {
		return reasonNotYetValid
	}
	if cert.ValidBefore != ssh.CertTimeInfinity {
		if before := int64(cert.ValidBefore); before < 0 || u >= before {
			return reasonExpired
		}
	}
	return ""
}

// checkerClock is the time given to CertChecker: now, moved up to ValidAfter
// when checkValidity accepted the certificate within the skew tolerance, so
// that the library's strict check agrees with ours.
func checkerClock(cert *ssh.Certificate, now time.Time) time.Time {
	if after := time.Unix(int64(cert.ValidAfter), 0); now.Before(after) {
		return after
	}
	return now
}

// verifySignature checks only the CA signature: CertChecker.CheckCert with
// every other check made to pass (the bytes signed are not exported).
func verifySignature(cert *ssh.Certificate) error {
	var opts []string
	for k := range cert.CriticalOptions {
		opts = append(opts, k)
	}
	principal := ""
	if len(cert.ValidPrincipals) > 0 {
		principal = cert.ValidPrincipals[0]
	}
	after := int64(cert.ValidAfter)
	if after < 0 {
		after = 0
	}
	at := time.Unix(after, 0)
	if cert.ValidBefore != ssh.CertTimeInfinity && int64(cert.ValidBefore) <= after {
		// An empty window: the validity check refuses it next.
		return nil
	}
	cc := &ssh.CertChecker{SupportedCriticalOptions: opts, Clock: func() time.Time { return at }}
	return cc.CheckCert(principal, cert)
}

// sourceAddressAllows reports whether addr matches the source-address
// list (comma-separated addresses and CIDR blocks, PROTOCOL.certkeys). A
// malformed list allows nothing.
func sourceAddressAllows(list string, addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if strings.Contains(item, "/") {
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return false
			}
			if p.Contains(ip) {
				return true
			}
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return false
		}
		if a.Unmap() == ip {
			return true
		}
	}
	return false
}

// newGrant reads what the certificate permits, with the host's tier
// settings where the certificate's sshward extensions are silent.
func (s *Server) newGrant(c ssh.ConnMetadata, cert *ssh.Certificate, u *User) *grant {
	ext := cert.Extensions
	g := &grant{
		cert: cert, user: u, login: c.User(),
		identity:   identityOf(cert.KeyId),
		tier:       s.cfg.Tier,
		requestID:  ext[api.ExtRequestID],
		clientAddr: c.RemoteAddr().String(),
		settings:   *s.cfg.Settings,
	}
	if t := ext[api.ExtTier]; t != "" {
		g.tier = t
	}
	g.reason = ext[api.ExtReason]
	for _, a := range strings.Split(ext[api.ExtApprovers], ",") {
		if a = strings.TrimSpace(a); a != "" {
			g.approvers = append(g.approvers, a)
		}
	}
	if v, ok := ext[api.ExtRecordInput]; ok {
		// Anything but an explicit "no" records input: the safe reading.
		g.settings.RecordInput = v != "no"
	}
	if v, ok := ext[api.ExtOnRecFail]; ok {
		g.settings.OnRecordingFailure = FailClosed
		if v == string(FailOpen) {
			g.settings.OnRecordingFailure = FailOpen
		}
	}
	if _, ok := ext[api.ExtEndOnExpiry]; ok {
		g.settings.EndOnExpiry = true
	}
	if v, ok := ext[api.ExtBulkOutput]; ok {
		// Anything unreadable keeps all binary output: the safe reading.
		g.settings.BulkKeepBytes, _ = api.ParseBulkOutput(v)
	}
	_, g.singleUse = ext[api.ExtSingleUse]
	g.forceCommand, g.hasForce = cert.CriticalOptions[optForceCommand]
	_, g.permitPTY = ext[extPermitPTY]
	_, g.permitPortFw = ext[extPermitPortFwd]
	_, g.permitAgent = ext[extPermitAgentFwd]
	_, g.permitUserRC = ext[extPermitUserRC]
	return g
}

// identityOf is the person in a KeyId of the form
// "alice@local tier=production req=- serial=…", or the workload
// ("ci:org/deploy@refs/heads/main run=42"): see api.KeyIDIdentity.
func identityOf(keyID string) string { return api.KeyIDIdentity(keyID) }

// admitVerified runs once the client proved it holds the admitted key:
// only now is a single-use certificate spent.
func (s *Server) admitVerified(ca *connAuth, c ssh.ConnMetadata, p *ssh.Permissions) (*ssh.Permissions, error) {
	g, _ := p.ExtraData[grantKey{}].(*grant)
	if g == nil {
		return nil, errors.New("agent: admission state missing")
	}
	if g.singleUse {
		// Fleet-wide: claimed at the CA before the session starts (requestused.go).
		if err := s.spendSingleUse(ca, c, g); err != nil {
			return nil, err
		}
	}
	s.audit(context.Background(), AuditEvent{Action: AuditAdmitted, SessionID: ca.id, Serial: g.cert.Serial,
		KeyID: g.cert.KeyId, Principal: g.login, Tier: g.tier, ClientAddr: g.clientAddr,
		Detail: "extensions=" + extensionList(g.cert)})
	return p, nil
}

func extensionList(cert *ssh.Certificate) string {
	var names []string
	for k := range cert.Extensions {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// refuse logs and audits a refused key (later, for tentative reasons) and
// returns the error the SSH library turns into an authentication failure,
// with a banner when the key was meant for this host.
func (s *Server) refuse(ca *connAuth, c ssh.ConnMetadata, cert *ssh.Certificate, reason, detail string) error {
	banner := deniedBanner
	switch reason {
	case reasonSingleUse:
		banner = usedBanner
	case reasonHostNotListed:
		banner = s.hostBanner(cert)
	case reasonOutOfScope, reasonBadScope:
		banner = s.scopeBanner(cert)
	case reasonRevocationStale:
		banner = s.refusalBanner(reason)
	}
	return s.refuseWith(ca, c, cert, reason, detail, banner)
}

// refuseWith is refuse with the banner to show when the refusal is not
// tentative.
func (s *Server) refuseWith(ca *connAuth, c ssh.ConnMetadata, cert *ssh.Certificate, reason, detail, banner string) error {
	ev := AuditEvent{Action: AuditAdmissionRefused, SessionID: ca.id, Principal: c.User(),
		Tier: s.cfg.Tier, ClientAddr: c.RemoteAddr().String(), Reason: reason, Detail: detail}
	if cert != nil && !unverified(reason) {
		ev.Serial, ev.KeyID = cert.Serial, cert.KeyId
		if t := cert.Extensions[api.ExtTier]; t != "" {
			ev.Tier = t
		}
	}
	err := &refusal{reason: reason}
	if tentative(reason) {
		ca.mu.Lock()
		ca.pending = append(ca.pending, ev)
		ca.mu.Unlock()
		return err
	}
	s.logRefusal(ev)
	return &ssh.BannerError{Err: err, Message: banner}
}

func (s *Server) logRefusal(ev AuditEvent) {
	s.log.Warn("agent: certificate refused", "session_id", ev.SessionID, "serial", ev.Serial,
		"key_id", ev.KeyID, "principal", ev.Principal, "tier", ev.Tier, "reason", ev.Reason,
		"detail", ev.Detail, "client", ev.ClientAddr)
	s.audit(context.Background(), ev)
}

func (s *Server) audit(ctx context.Context, ev AuditEvent) {
	if ev.Time.IsZero() {
		ev.Time = s.cfg.Now().UTC()
	}
	s.cfg.Auditor.Audit(ctx, ev)
}
