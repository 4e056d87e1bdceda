// Package api holds the JSON wire types, paths and certificate extension names
// shared by the CA server, the sshward client, the host agent and the playback
// server. It is pure: no I/O, no dependencies beyond the standard library, so a
// host can link it without linking any signing code.
//
// Happy path for an engineer:
//
//	POST /v1/login          LoginRequest         -> LoginResponse (session token)
//	POST /v1/cert           CertRequest  (Bearer) -> CertResponse
//
// Dual control (see requests.go for every path):
//
//	POST /v1/requests       CreateRequest (Bearer) -> AccessRequest {id, state: pending}
//	POST /v1/requests/{id}/approve  Decision  (Bearer, another person) -> AccessRequest
//	POST /v1/cert           CertRequest{RequestID} (Bearer) -> one CertResponse
//
// For a host:
//
//	POST /v1/host/join      JoinRequest          -> HostCertResponse
//	POST /v1/host/renew     RenewRequest (host)  -> HostCertResponse
//	GET  /v1/host/revoked/{tier}       (host)    -> RevocationList
//
// Public paths: GET /healthz, GET /v1/trust, GET /v1/krl/{tier}, GET /v1/login/oidc.
package api
