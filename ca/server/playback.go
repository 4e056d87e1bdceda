package server

import "net/http"

// playbackRoutes registers the playback-server join API.
func (s *Server) playbackRoutes(mux *http.ServeMux) {}
