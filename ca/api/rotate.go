package api

// CA key rotation (issue 14). During a rotation's overlap a tier has two
// trusted user-CA keys: TrustResponse.UserCAKeys lists both (signing key
// first), and hosts get both with the old one's NotAfter in UserCALimit.

// EventTrust, on the revocation stream to an agent, carries what its tier
// trusts now (HostTrust); sent in the hello and whenever a key rotates or
// retires.
const EventTrust = "trust"

// HostTrust is the user-CA keys a host trusts and their limits.
type HostTrust struct {
	UserCA       []string      `json:"user_ca"`
	UserCALimits []UserCALimit `json:"user_ca_limits,omitempty"`
}
