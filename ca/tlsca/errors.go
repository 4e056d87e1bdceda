package tlsca

import (
	"errors"
	"fmt"
)

// Sentinel errors; callers test them with errors.Is.
var (
	// ErrExists means CreateRoot found a root key or certificate in DIR.
	ErrExists = errors.New("root already exists")
	// ErrFingerprintMismatch means no certificate the server sent has the
	// pinned fingerprint. The concrete error is a *FingerprintMismatchError.
	ErrFingerprintMismatch = errors.New("root fingerprint mismatch")
	// ErrBadFingerprint means a pin is not a SHA-256 hex fingerprint.
	ErrBadFingerprint = errors.New("not a sha-256 hex fingerprint")
	// ErrNoServerName means a pinned handshake had no host name to verify
	// the leaf for (an IP address was dialled with PinnedClientConfig).
	ErrNoServerName = errors.New("no server name to verify")
	// ErrNotRoot means the pinned certificate is not a self-signed CA.
	ErrNotRoot = errors.New("not a self-signed ca certificate")
)

// FingerprintMismatchError is what a client sees when the server's root is
// not the one it pinned: the server is not the CA it meant, or the pin is
// mistyped. Got is the fingerprint of the last certificate the server sent.
type FingerprintMismatchError struct {
	Got, Want string
}

func (e *FingerprintMismatchError) Error() string {
	return fmt.Sprintf("tlsca: server root fingerprint %s does not match the pinned fingerprint %s: check the --fingerprint value", e.Got, e.Want)
}

// Is makes errors.Is(err, ErrFingerprintMismatch) true.
func (e *FingerprintMismatchError) Is(target error) bool { return target == ErrFingerprintMismatch }
