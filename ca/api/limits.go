package api

import "time"

// UserCALimit is what a host may let a user certificate claim when it is
// signed by one user-CA key: the tier's max_ttl. A certificate's validity
// window (ValidBefore − ValidAfter) may exceed MaxTTL only by the CA's
// backdating for clock skew (≤ 1 minute, DESIGN.md "Trust model"). Sent
// with every host certificate (HostCertResponse.UserCALimits); agents cache
// it in their data directory.
type UserCALimit struct {
	// Tier is the tier whose user-CA key UserCA is.
	Tier string `json:"tier"`
	// UserCA is the user-CA public key (authorized_keys format), as in
	// HostCertResponse.UserCA.
	UserCA string `json:"user_ca"`
	// MaxTTL is the tier's max_ttl.
	MaxTTL Duration `json:"max_ttl"`
	// NotAfter, when set, is when the key retires (a rotation's overlap
	// ends): from then on hosts refuse its certificates, whether or not
	// they heard from the CA again.
	NotAfter time.Time `json:"not_after,omitzero"`
}
