package krl

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// them; match with errors.Is, never on message text.
var (
	// ErrInvalid reports a KRL value that Marshal refuses to encode because
	// OpenSSH would reject the result or misread it (serial 0, a range with
	// First > Last, a NUL byte in a key ID or comment, a certificate where a
	// plain key belongs, a date before 1970).
	ErrInvalid = errors.New("invalid KRL content")

	// ErrMalformed reports input that is not a well-formed KRL as
	// PROTOCOL.krl describes it: wrong magic, truncated fields, trailing
	// bytes inside a section, unknown section types, values krl.c rejects.
	ErrMalformed = errors.New("malformed KRL")

	// ErrUnsupported reports a well-formed KRL that uses a feature this
	// package deliberately refuses: another format version, flags, signature
	// sections (OpenSSH >= 9.4 refuses them too), SHA1 fingerprint sections,
	// critical extensions, or a size OpenSSH itself will not load.
	ErrUnsupported = errors.New("unsupported KRL feature")
)
