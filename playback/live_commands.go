package playback

import (
	"net/http"
	"strconv"

	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// CommandsResponse answers GET /api/sessions/{id}/commands.
type CommandsResponse struct {
	Commands  []recorder.Command `json:"commands"`
	Live      bool               `json:"live"`
	Integrity string             `json:"integrity"`
}

// handleCommands serves a session's command timeline (issue 13 §3,
// recorder.Commands), extracted from its stored cast. Audited like a view.
func (s *Server) handleCommands(w http.ResponseWriter, r *http.Request, who *reader) {
	if s.proxyLive(w, r) { // live_replicas.go
		return
	}
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	integrity := IntegrityPending
	if rec.Finished {
		integrity = s.verify(r.Context(), rec, true).integrity()
	}
	f, err := s.st.OpenCast(rec.ID)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	defer f.Close()
	s.audit(r, store.AuditEvent{Type: "view", Actor: who.user, Subject: rec.ID, Details: map[string]string{
		"user": rec.Meta.Identity, "tier": rec.Meta.Tier, "live": strconv.FormatBool(!rec.Finished), "what": "commands", "integrity": integrity}})
	out := CommandsResponse{Commands: []recorder.Command{}, Live: !rec.Finished, Integrity: integrity}
	rd, err := recorder.NewReader(f)
	if err == nil {
		// A live cast may end in a line still arriving: what was read stands.
		if cmds, _ := recorder.Commands(rd, rec.Meta); cmds != nil {
			out.Commands = cmds
		}
	}
	writeJSON(w, http.StatusOK, out)
}
