package playback

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
)

// terminator is the part of the CA client that ends live sessions
// (CAClient.Terminate). A Config.CA without it cannot terminate.
type terminator interface {
	Terminate(ctx context.Context, token, id string, req api.TerminateRequest) (*api.TerminateResponse, error)
}

// TerminateBody is the body of POST /api/sessions/{id}/terminate.
type TerminateBody struct {
	Reason   string `json:"reason"`
	LockUser bool   `json:"lock_user,omitempty"`
}

// handleTerminate ends a live session (issue 13 §1): the server fills in
// the session's host, tier, user and serial from its signed metadata and
// asks the CA with the reader's own token; the CA decides (policy
// terminate_groups), audits, and orders the host's agent. The answer is
// the CA's, refusals included; this server audits the attempt too.
func (s *Server) handleTerminate(w http.ResponseWriter, r *http.Request, who *reader) {
	var body TerminateBody
	if !decodeJSON(w, r, &body) {
		return
	}
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	if rec.Finished {
		writeError(w, http.StatusConflict, "session_ended", "session "+rec.ID+" has already ended")
		return
	}
	t, ok := s.cfg.CA.(terminator)
	if !ok {
		writeError(w, http.StatusNotImplemented, "not_supported", "this playback server cannot reach the CA to end sessions")
		return
	}
	req := api.TerminateRequest{Reason: body.Reason, LockUser: body.LockUser, Host: rec.Meta.Host, Tier: rec.Meta.Tier,
		User: rec.Meta.Identity, Serial: rec.Meta.Serial}
	ev := store.AuditEvent{Type: "terminate", Actor: who.user, Subject: rec.ID, Reason: body.Reason,
		Details: map[string]string{"user": rec.Meta.Identity, "host": rec.Meta.Host, "tier": rec.Meta.Tier, "lock_user": strconv.FormatBool(body.LockUser)}}
	resp, err := t.Terminate(r.Context(), who.token, rec.ID, req)
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		ev.Outcome = "refused"
		ev.Reason = ae.Message
		s.audit(r, ev)
		status := ae.Status
		if status == 0 || status >= 500 {
			status = http.StatusBadGateway
		}
		writeError(w, status, ae.Code, ae.Message)
		return
	case err != nil:
		s.log.WarnContext(r.Context(), "playback: terminate through the CA failed", "session_id", rec.ID, "err", err)
		writeError(w, http.StatusServiceUnavailable, "ca_unavailable", "the CA cannot be reached: try again shortly")
		return
	}
	s.audit(r, ev)
	writeJSON(w, http.StatusOK, resp)
}
