package api

import (
	"errors"
	"strings"
)

// PathWorkloadCert exchanges a CI platform's OIDC token for a short
// certificate (POST, no session: the token is the credential; issue 12 §1).
const PathWorkloadCert = "/v1/workload/cert"

// MaxWorkloadTokenBytes bounds the token of a WorkloadCertRequest.
const MaxWorkloadTokenBytes = 16 << 10

// WorkloadCertRequest is the body of POST PathWorkloadCert.
type WorkloadCertRequest struct {
	Token     string `json:"token"` // the CI platform's OIDC token (a JWT)
	Tier      string `json:"tier"`
	PublicKey string `json:"public_key"`
}

// Check validates the shape of the request (not the token).
func (r *WorkloadCertRequest) Check() error {
	switch {
	case r.Token == "":
		return errors.New("token is required: pass the CI platform's OIDC token")
	case len(r.Token) > MaxWorkloadTokenBytes:
		return errors.New("token is too long to be a CI token")
	case r.Tier == "":
		return errors.New("tier is required")
	case r.PublicKey == "":
		return errors.New("public_key is required")
	}
	return nil
}

// KeyIDIdentity is who a certificate's key id names: its first field
// ("alice@local tier=…" → "alice@local"), or for a workload its first two
// ("ci:org/deploy@refs/heads/main run=42 tier=…"), so recordings name the
// pipeline run. Agents record it; playback checks recordings against it.
func KeyIDIdentity(keyID string) string {
	f := strings.Fields(keyID)
	switch {
	case len(f) == 0:
		return ""
	case strings.HasPrefix(f[0], "ci:") && len(f) > 1 && strings.HasPrefix(f[1], "run="):
		return f[0] + " " + f[1]
	}
	return f[0]
}
