package hostauth

import "errors"

// Sentinel errors from Verify; callers test them with errors.Is. They are for
// logs and metrics: an HTTP response should say 401 and no more.
var (
	// ErrNoAuth: no SSHWard-Host Authorization header (there may be another
	// scheme, such as Bearer, for another authenticator).
	ErrNoAuth = errors.New("no host authorization")
	// ErrMalformed: the header is not a well-formed SSHWard-Host header.
	ErrMalformed = errors.New("malformed host authorization")
	// ErrNotHostCert: the key offered is not a usable host certificate (a user
	// certificate, a plain key, no host names, or critical options).
	ErrNotHostCert = errors.New("not a host certificate")
	// ErrUnknownCA: the certificate is not signed by a trusted host CA.
	ErrUnknownCA = errors.New("certificate not signed by a host ca")
	// ErrExpired: the certificate is expired or not yet valid.
	ErrExpired = errors.New("certificate outside its validity")
	// ErrRevoked: the certificate is revoked.
	ErrRevoked = errors.New("certificate revoked")
	// ErrBadSignature: the certificate's or the request's signature does not
	// verify (a tampered body, path or header), or it uses SHA-1.
	ErrBadSignature = errors.New("bad signature")
	// ErrStale: the request's timestamp is further than MaxSkew from now.
	ErrStale = errors.New("request timestamp out of range")
	// ErrReplay: the nonce was used before.
	ErrReplay = errors.New("request replayed")
)
