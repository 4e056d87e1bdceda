package playback

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// CodeProvenance is the error code of an upload whose metadata claims what
// the uploading host or the user's certificate does not prove.
const CodeProvenance = "provenance_failed"

// Provenance check states (ProvenanceCheck.Status).
const (
	ProvenanceOK     = "ok"     // proven
	ProvenanceFailed = "failed" // disproven: the recording fails integrity
	// ProvenanceUnproven: nothing claims it and nothing proves it (a
	// recording from an agent older than user_cert, a host certificate that
	// names no tier because sshward's join did not issue it).
	ProvenanceUnproven = "unproven"
)

// ProvenanceCheck is one check of who, where and which tier (design: Trust
// invariants, "a recording proves its provenance").
type ProvenanceCheck struct {
	Name   string `json:"name"` // host, tier, user_cert
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// trustMaxAge bounds how old the CA's trust material may be when a
// recording's user certificate is checked against it.
const trustMaxAge = time.Minute

// trust returns the CA's trust material (user CA keys per tier, which tiers
// each tier's certificates are trusted on), fetched again when older than
// trustMaxAge; when the CA cannot be reached the last copy is used.
func (s *Server) trust(ctx context.Context) (*api.TrustResponse, error) {
	s.trustMu.Lock()
	tr, at := s.trustResp, s.trustAt
	s.trustMu.Unlock()
	if tr != nil && s.cfg.Now().Sub(at) < trustMaxAge {
		return tr, nil
	}
	fresh, err := s.fetchTrust(ctx)
	if err != nil {
		if tr != nil {
			return tr, nil
		}
		return nil, err
	}
	return fresh, nil
}

// fetchTrust fetches the CA's trust material now and keeps it for trust.
func (s *Server) fetchTrust(ctx context.Context) (*api.TrustResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fresh, err := s.cfg.CA.Trust(ctx)
	if err != nil {
		return nil, fmt.Errorf("playback: fetch the CA's trust material: %w", err)
	}
	s.trustMu.Lock()
	s.trustResp, s.trustAt = fresh, s.cfg.Now()
	s.trustMu.Unlock()
	return fresh, nil
}

// hostTierOf is the tier a host certificate was issued for: its
// tier@sshward extension, or (host certificates from before that extension)
// the "tier=" word of its key id, which the CA signed as well.
func hostTierOf(cert *ssh.Certificate) string {
	if t := cert.Extensions[api.ExtTier]; t != "" {
		return t
	}
	for _, f := range strings.Fields(cert.KeyId) {
		if t, ok := strings.CutPrefix(f, "tier="); ok {
			return t
		}
	}
	return ""
}

// provenance checks m against the host certificate that uploaded it and
// the user certificate it carries. tr may be nil when the CA's trust
// material is unavailable: then what needs it is failed, never assumed.
func provenance(hostCert *ssh.Certificate, m recorder.Metadata, tr *api.TrustResponse) []ProvenanceCheck {
	var out []ProvenanceCheck
	add := func(name, status, format string, args ...any) {
		out = append(out, ProvenanceCheck{Name: name, Status: status, Detail: fmt.Sprintf(format, args...)})
	}

	// Where: the host it names is the host that uploaded it.
	switch {
	case m.Host == "":
		add("host", ProvenanceOK, "uploaded by %s", strings.Join(hostCert.ValidPrincipals, ", "))
	case slices.Contains(hostCert.ValidPrincipals, m.Host):
		add("host", ProvenanceOK, "%s uploaded it with its own host certificate", m.Host)
	default:
		add("host", ProvenanceFailed, "claims host %s but was uploaded by %s", m.Host, strings.Join(hostCert.ValidPrincipals, ", "))
	}

	// Which tier: the host's own, or one whose certificates its tier trusts.
	ht := hostTierOf(hostCert)
	switch {
	case ht == "":
		add("tier", ProvenanceUnproven, "the host certificate names no tier")
	case m.Tier == ht:
		add("tier", ProvenanceOK, "%s is the uploading host's tier", m.Tier)
	case tr == nil:
		add("tier", ProvenanceFailed, "tier %s on a %s host cannot be checked: the CA's trust material is unavailable", m.Tier, ht)
	case trustedOn(tr, m.Tier, ht):
		add("tier", ProvenanceOK, "%s certificates are trusted on %s hosts", m.Tier, ht)
	default:
		add("tier", ProvenanceFailed, "claims tier %s but the uploading host is a %s host, which does not accept %s certificates", m.Tier, ht, m.Tier)
	}

	// Who: the user's certificate, signed by the tier's user CA, says the
	// identity, principal, serial, key id and request the metadata claims.
	if m.UserCert == "" {
		if m.RequestID != "" || m.Reason != "" || len(m.Approvers) > 0 {
			add("user_cert", ProvenanceFailed, "claims access request %q, a reason or approvers without the certificate that carries them", m.RequestID)
		} else {
			add("user_cert", ProvenanceUnproven, "the recording carries no user certificate (agent older than this check)")
		}
		return out
	}
	if problem := checkUserCert(m, tr); problem != "" {
		add("user_cert", ProvenanceFailed, "%s", problem)
	} else {
		add("user_cert", ProvenanceOK, "certificate serial %d, signed by the %s user CA, matches identity, principal, key id and request", m.Serial, m.Tier)
	}
	return out
}

func trustedOn(tr *api.TrustResponse, tier, hostTier string) bool {
	for _, ti := range tr.Tiers {
		if ti.Name == tier {
			return slices.Contains(ti.TrustedOn, hostTier)
		}
	}
	return false
}

// checkUserCert returns what is wrong with m's user certificate, or "".
func checkUserCert(m recorder.Metadata, tr *api.TrustResponse) string {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.UserCert))
	if err != nil {
		return "the user certificate does not parse"
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok || cert.CertType != ssh.UserCert {
		return "user_cert is not a user certificate"
	}
	if tr == nil {
		return "the CA's trust material is unavailable: the user certificate cannot be checked"
	}
	caLine, ok := tr.UserCA[m.Tier]
	if !ok {
		return fmt.Sprintf("the CA has no tier %q", m.Tier)
	}
	// During a key rotation's overlap the tier has two keys (UserCAKeys).
	signed := false
	for _, line := range append([]string{caLine}, tr.UserCAKeys[m.Tier]...) {
		caKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err == nil && bytes.Equal(caKey.Marshal(), cert.SignatureKey.Marshal()) {
			signed = true
			break
		}
	}
	if !signed {
		return fmt.Sprintf("the user certificate is not signed by the %s user CA", m.Tier)
	}
	// The signature, the principal and validity at the session's start.
	// source-address and force-command were the agent's to enforce; here
	// they are only known options, not a reason to doubt the certificate.
	checker := ssh.CertChecker{Clock: func() time.Time { return m.Start },
		SupportedCriticalOptions: []string{"source-address", "force-command"}}
	if err := checker.CheckCert(m.Principal, cert); err != nil {
		return "the user certificate does not verify for principal " + m.Principal + " at the session's start: " + strings.TrimPrefix(err.Error(), "ssh: ")
	}
	ext := cert.Extensions
	var approvers []string
	for _, a := range strings.Split(ext[api.ExtApprovers], ",") {
		if a = strings.TrimSpace(a); a != "" {
			approvers = append(approvers, a)
		}
	}
	first := api.KeyIDIdentity(cert.KeyId)
	switch {
	case cert.Serial != m.Serial:
		return fmt.Sprintf("serial %d is not the certificate's (%d)", m.Serial, cert.Serial)
	case cert.KeyId != m.KeyID:
		return fmt.Sprintf("key id %q is not the certificate's", m.KeyID)
	case m.Identity == "" || (first != m.Identity && !strings.HasPrefix(first, m.Identity+"@")):
		return fmt.Sprintf("identity %q is not the certificate's (%q)", m.Identity, first)
	case ext[api.ExtTier] != "" && ext[api.ExtTier] != m.Tier:
		return fmt.Sprintf("tier %q is not the certificate's (%q)", m.Tier, ext[api.ExtTier])
	case ext[api.ExtRequestID] != m.RequestID:
		return fmt.Sprintf("request %q is not the certificate's (%q)", m.RequestID, ext[api.ExtRequestID])
	case ext[api.ExtReason] != m.Reason:
		return "the reason is not the certificate's"
	case !slices.Equal(approvers, m.Approvers):
		return fmt.Sprintf("approvers %v are not the certificate's (%v)", m.Approvers, approvers)
	}
	return ""
}

// failedProvenance returns the first failed check, if any.
func failedProvenance(checks []ProvenanceCheck) (ProvenanceCheck, bool) {
	for _, c := range checks {
		if c.Status == ProvenanceFailed {
			return c, true
		}
	}
	return ProvenanceCheck{}, false
}

// refuseUnproven answers a start or finish whose metadata claims what the
// uploading host or the user's certificate does not prove: 403, audited,
// nothing stored. It reports whether it answered.
func (s *Server) refuseUnproven(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, m recorder.Metadata, step string) bool {
	tr, err := s.trust(r.Context())
	if err != nil {
		s.log.WarnContext(r.Context(), "playback: trust material unavailable for a provenance check", "err", err)
	}
	c, failed := failedProvenance(provenance(cert, m, tr))
	if !failed {
		return false
	}
	if tr == nil {
		// Not the host's fault: it retries later, the recording waits in its spool.
		writeError(w, http.StatusServiceUnavailable, api.CodeBadRequest, "the playback server cannot check this recording's provenance now (CA unreachable): try again later")
		return true
	}
	s.audit(r, store.AuditEvent{Type: "recording." + step, Actor: "host:" + owner(cert), Subject: m.SessionID, Outcome: "refused",
		Reason: "provenance " + c.Name + ": " + c.Detail})
	s.log.WarnContext(r.Context(), "playback: upload refused: provenance", "session_id", m.SessionID, "host", owner(cert), "check", c.Name, "reason", c.Detail)
	writeError(w, http.StatusForbidden, CodeProvenance, "recording refused: "+c.Name+": "+c.Detail)
	return true
}
