package keys

import "errors"

// Sentinel errors; callers test them with errors.Is.
var (
	// ErrUnsupportedKMS means the key URI names a KMS scheme this build has
	// no driver for. The error text names the scheme, never the whole URI
	// (a PKCS#11 URI may carry a PIN).
	ErrUnsupportedKMS = errors.New("unsupported kms")
	// ErrBadPassphrase means the key file did not decrypt with the given
	// passphrase (or it is damaged: PBES2 has no MAC, so the two can look
	// alike).
	ErrBadPassphrase = errors.New("wrong passphrase")
	// ErrExists means Create found a key or public key file already there.
	ErrExists = errors.New("key already exists")
	// ErrNoPassphrase means no passphrase was given where one is required.
	ErrNoPassphrase = errors.New("no passphrase")
	// ErrInsecureFile means a secret file is readable or writable by group or
	// others.
	ErrInsecureFile = errors.New("file is accessible by group or others")
	// ErrNotEncrypted means a key file holds a plaintext private key; CA keys
	// are only accepted encrypted at rest.
	ErrNotEncrypted = errors.New("key file is not encrypted")
)

// Rotation errors (rotate.go).
var (
	// ErrRotationPending means a rotation was asked while the previous key
	// of an earlier one is still trusted: retire it first.
	ErrRotationPending = errors.New("an earlier rotation has not retired its previous key")
	// ErrNoRotation means there is no previous key to retire.
	ErrNoRotation = errors.New("no previous key to retire")
)
