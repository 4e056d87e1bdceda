package api

import "time"

// CA key rotation (issue 14). During a rotation's overlap a tier has two
// trusted user-CA keys: TrustResponse.UserCAKeys lists both (signing key
// first), and hosts get both with the old one's NotAfter in UserCALimit.

// EventTrust, on the revocation stream to an agent, carries what its tier
// trusts now (HostTrust); sent in the hello and whenever a key rotates or
// retires.
const EventTrust = "trust"

// HostTrust is the user-CA keys a host trusts and their limits, and the
// host-CA keys whose signature it accepts on the CA's orders.
type HostTrust struct {
	UserCA       []string      `json:"user_ca"`
	UserCALimits []UserCALimit `json:"user_ca_limits,omitempty"`
	// HostCA lists the host-CA keys the CA signs orders with
	// (TerminateOrder), the signing key first; during a host-CA
	// rotation's overlap the previous key follows with the time it
	// retires. An agent verifies orders against these keys, whichever of
	// them signed its own host certificate, and renews its certificate
	// once the first one is not the key that signed it. Absent from CAs
	// before host-CA rotation: the agent then trusts only the key that
	// signed its host certificate.
	HostCA []HostCAKey `json:"host_ca,omitempty"`
}

// HostCAKey is a trusted host-CA key.
type HostCAKey struct {
	// Key is the public key, authorized_keys format.
	Key string `json:"key"`
	// NotAfter is when a previous key retires; zero for the signing key.
	NotAfter time.Time `json:"not_after,omitzero"`
}
