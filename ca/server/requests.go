package server

import "net/http"

// requestRoutes registers the access-request API (dual control).
func (s *Server) requestRoutes(mux *http.ServeMux) {}
