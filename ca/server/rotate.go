package server

import (
	"net/http"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
)

// Admin paths of key rotation (issue 14).
const (
	AdminKeysRotate = "/admin/keys/rotate"
	AdminKeysRetire = "/admin/keys/retire"
)

// KeyRotateRequest is the body of POST /admin/keys/rotate.
type KeyRotateRequest struct {
	Tier string `json:"tier,omitempty"`
	// HostCA rotates the host CA key instead of a tier's.
	HostCA  bool         `json:"host_ca,omitempty"`
	Overlap api.Duration `json:"overlap"`
}

// KeyRetireRequest is the body of POST /admin/keys/retire.
type KeyRetireRequest struct {
	Tier   string `json:"tier,omitempty"`
	HostCA bool   `json:"host_ca,omitempty"`
	Force  bool   `json:"force,omitempty"`
}

// hostTrust is what a watcher of scope trusts; nil for a playback server
// (api.HostsScope), which reads the trust endpoint instead.
func (s *Server) hostTrust(scope string) *api.HostTrust {
	if scope == api.HostsScope {
		return nil
	}
	return s.a.HostTrust(scope)
}

func (s *Server) keyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+AdminKeysRotate, func(w http.ResponseWriter, r *http.Request) {
		var req KeyRotateRequest
		if !s.decode(w, r, &req) {
			return
		}
		var res *ca.KeyRotation
		var err error
		if req.HostCA {
			res, err = s.a.RotateHostCA(r.Context(), time.Duration(req.Overlap), "admin-socket")
		} else {
			res, err = s.a.RotateUserCA(r.Context(), req.Tier, time.Duration(req.Overlap), "admin-socket")
		}
		s.reply(w, r, res, err)
	})
	mux.HandleFunc("POST "+AdminKeysRetire, func(w http.ResponseWriter, r *http.Request) {
		var req KeyRetireRequest
		if !s.decode(w, r, &req) {
			return
		}
		var res *ca.KeyRotation
		var err error
		if req.HostCA {
			res, err = s.a.RetireHostCA(r.Context(), req.Force, "admin-socket")
		} else {
			res, err = s.a.RetireUserCA(r.Context(), req.Tier, req.Force, "admin-socket")
		}
		s.reply(w, r, res, err)
	})
}
