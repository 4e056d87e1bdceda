package playback

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// An open tier's session that runs unrecorded reaches auditors here: the
// host agent reports it (api.UnrecordedSession, signed with its host
// certificate) and the server writes it to its audit log, type
// api.EventSessionUnrecorded with the session id as Subject, before it
// answers 200. Auditors find it with GET /api/audit?type=session.unrecorded
// (or ?subject=SESSION_ID). The sender is the host certificate's first
// name (Actor "host:NAME"); a report of a tier the sending host does not
// trust is refused (403, audited), as a recording's would be
// (provenance.go). A host name the certificate does not hold is kept as
// host_name_unproven rather than refused: the alert matters more than the
// name the host records sessions under.

func (s *Server) unrecordedRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+recorder.IngestPathPrefix+"{id}/unrecorded", s.withHost(maxUnrecordedBytes, s.handleUnrecorded))
}

// maxUnrecordedBytes bounds a report's body.
const maxUnrecordedBytes = 64 << 10

func (s *Server) handleUnrecorded(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	// Not strict: a newer agent may send fields this server does not know.
	var u api.UnrecordedSession
	if err := json.Unmarshal(body, &u); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "the body must be an unrecorded-session report (JSON)")
		return
	}
	if u.SessionID != id {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "the report names another session than the path")
		return
	}
	if err := u.Check(); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "report: "+err.Error())
		return
	}
	host := owner(cert)
	if problem := s.unrecordedProvenance(r.Context(), cert, u); problem != "" {
		s.audit(r, store.AuditEvent{Type: api.EventSessionUnrecorded, Actor: "host:" + host, Subject: id, Outcome: "refused", Reason: problem})
		writeError(w, http.StatusForbidden, CodeProvenance, problem)
		return
	}
	details := map[string]string{
		"severity": "alert", "event_id": u.EventID, "user": u.Identity, "principal": u.Principal,
		"host": host, "tier": u.Tier, "phase": u.Phase, "at": u.At.UTC().Format(time.RFC3339Nano),
	}
	hostName := "host_name"
	if !slices.Contains(cert.ValidPrincipals, u.Host) {
		hostName = "host_name_unproven"
	}
	for k, v := range map[string]string{hostName: u.Host, "key_id": u.KeyID, "client_addr": u.ClientAddr,
		"command": u.Command, "error": u.Error} {
		if v != "" {
			details[k] = v
		}
	}
	if u.Serial != 0 {
		details["serial"] = strconv.FormatUint(u.Serial, 10)
	}
	// Recorded before the answer: the host deletes nothing until it has
	// one, and sends the report again otherwise.
	_, err := s.st.AppendAudit(context.WithoutCancel(r.Context()), store.AuditEvent{
		Type: api.EventSessionUnrecorded, Actor: "host:" + host, Subject: id, ClientAddr: clientIP(r),
		Outcome: "ok", Reason: u.Reason, Details: details,
	})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.log.WarnContext(r.Context(), "playback: ALERT a session runs unrecorded", "alert", true, "session_id", id,
		"host", host, "tier", u.Tier, "principal", u.Principal, "reason", u.Reason)
	writeJSON(w, http.StatusOK, api.UnrecordedReceived{EventID: u.EventID})
}

// unrecordedProvenance returns why the sending host may not report u's
// tier ("" when it may).
func (s *Server) unrecordedProvenance(ctx context.Context, cert *ssh.Certificate, u api.UnrecordedSession) string {
	ht := hostTierOf(cert)
	if ht == "" || ht == u.Tier {
		return ""
	}
	tr, err := s.trust(ctx)
	if err != nil {
		return "tier " + u.Tier + " on a " + ht + " host cannot be checked: the CA's trust material is unavailable"
	}
	if !trustedOn(tr, u.Tier, ht) {
		return "the report claims tier " + u.Tier + " but the sending host is a " + ht + " host, which does not accept " + u.Tier + " certificates"
	}
	return ""
}
