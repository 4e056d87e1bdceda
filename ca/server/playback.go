package server

import (
	"net/http"

	"github.com/sshward/sshward/ca/api"
)

// playbackRoutes registers the playback-server join API. Public like host
// join: the one-time token in the body is the credential.
func (s *Server) playbackRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+api.PathPlaybackJoin, s.handlePlaybackJoin)
}

func (s *Server) handlePlaybackJoin(w http.ResponseWriter, r *http.Request) {
	var req api.PlaybackJoinRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, err := s.a.JoinPlayback(r.Context(), req, clientIP(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}
