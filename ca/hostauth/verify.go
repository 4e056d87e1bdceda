package hostauth

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultMaxSkew is how far a request's timestamp may be from the verifier's
// clock, either way.
const DefaultMaxSkew = 2 * time.Minute

// Verifier checks SSHWard-Host requests. Fields are read on every call;
// set them before first use and do not copy a Verifier after it.
type Verifier struct {
	// HostCAs returns the trusted host-CA public keys (called per request, so
	// a CA rotation applies at once). Nil trusts nothing.
	HostCAs func() []ssh.PublicKey
	// IsRevoked reports a revoked host certificate. Optional.
	IsRevoked func(*ssh.Certificate) bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxSkew bounds |now - ts|; zero means DefaultMaxSkew.
	MaxSkew time.Duration
	// Seen is the replay cache: it reports whether nonce was seen before and
	// otherwise remembers it until the given time. Nil means a private
	// NonceCache with default size, so replay protection is never off; set
	// it to a shared store when several replicas verify.
	Seen func(nonce string, until time.Time) bool

	defaultSeen     sync.Once
	defaultSeenFunc func(string, time.Time) bool
}

// Verify authenticates req, whose body the caller has read into body, and
// returns the host certificate. Errors wrap one of the sentinels in errors.go.
func (v *Verifier) Verify(req *http.Request, body []byte) (*ssh.Certificate, error) {
	values := req.Header.Values("Authorization")
	if len(values) == 0 {
		return nil, fmt.Errorf("hostauth: verify: %w", ErrNoAuth)
	}
	if len(values) > 1 {
		return nil, fmt.Errorf("hostauth: verify: %w: %d Authorization headers", ErrMalformed, len(values))
	}
	h, err := parseHeader(values[0])
	if errors.Is(err, errNotScheme) {
		return nil, fmt.Errorf("hostauth: verify: %w", ErrNoAuth)
	}
	if err != nil {
		return nil, fmt.Errorf("hostauth: verify: %w: %w", ErrMalformed, err)
	}

	// Cheap checks first: a stale request costs no signature verification.
	now := v.now()
	skew := v.maxSkew()
	sent := time.Unix(h.ts, 0)
	if d := now.Sub(sent); d > skew || d < -skew {
		return nil, fmt.Errorf("hostauth: verify: %w: timestamp %s is %s from now (max %s): check the host's clock", ErrStale, sent.UTC().Format(time.RFC3339), d.Round(time.Second), skew)
	}

	pub, err := ssh.ParsePublicKey(h.cert)
	if err != nil {
		return nil, fmt.Errorf("hostauth: verify: %w: certificate: %w", ErrMalformed, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("hostauth: verify: %w: a plain %s key", ErrNotHostCert, pub.Type())
	}
	if err := v.checkCert(cert, now); err != nil {
		return nil, fmt.Errorf("hostauth: verify host cert serial=%d key_id=%q: %w", cert.Serial, cert.KeyId, err)
	}

	var sig ssh.Signature
	if err := ssh.Unmarshal(h.sig, &sig); err != nil {
		return nil, fmt.Errorf("hostauth: verify host cert serial=%d: %w: signature encoding: %w", cert.Serial, ErrMalformed, err)
	}
	switch sig.Format {
	case "ssh-rsa", "ssh-dss": // SHA-1
		return nil, fmt.Errorf("hostauth: verify host cert serial=%d: %w: %s (SHA-1) refused", cert.Serial, ErrBadSignature, sig.Format)
	}
	data := signedData(req.Method, req.URL.RequestURI(), h.ts, h.nonce, body)
	if err := cert.Key.Verify(data, &sig); err != nil {
		return nil, fmt.Errorf("hostauth: verify host cert serial=%d: %w: request signature does not verify", cert.Serial, ErrBadSignature)
	}

	// Last, so only authenticated requests take room in the replay cache.
	if v.seen()(h.nonce, sent.Add(skew)) {
		return nil, fmt.Errorf("hostauth: verify host cert serial=%d: %w: nonce %s", cert.Serial, ErrReplay, h.nonce)
	}
	return cert, nil
}

// checkCert: a host certificate (PROTOCOL.certkeys) from a trusted host CA,
// naming at least one host, with no critical options (none are defined for
// host certificates), valid now, not revoked, with a CA signature that
// verifies.
func (v *Verifier) checkCert(cert *ssh.Certificate, now time.Time) error {
	if cert.CertType != ssh.HostCert {
		return fmt.Errorf("%w: a user certificate", ErrNotHostCert)
	}
	if len(cert.ValidPrincipals) == 0 {
		// OpenSSH would take it for any host name: never from us.
		return fmt.Errorf("%w: names no host", ErrNotHostCert)
	}
	if len(cert.CriticalOptions) != 0 {
		return fmt.Errorf("%w: has critical options", ErrNotHostCert)
	}
	if !v.trusted(cert.SignatureKey) {
		return fmt.Errorf("%w: signed by %s", ErrUnknownCA, ssh.FingerprintSHA256(cert.SignatureKey))
	}
	unix := now.Unix()
	if int64(cert.ValidAfter) < 0 || unix < int64(cert.ValidAfter) {
		return fmt.Errorf("%w: not valid before %s", ErrExpired, time.Unix(int64(cert.ValidAfter), 0).UTC().Format(time.RFC3339))
	}
	if cert.ValidBefore != ssh.CertTimeInfinity && (int64(cert.ValidBefore) < 0 || unix >= int64(cert.ValidBefore)) {
		return fmt.Errorf("%w: expired at %s", ErrExpired, time.Unix(int64(cert.ValidBefore), 0).UTC().Format(time.RFC3339))
	}
	if v.IsRevoked != nil && v.IsRevoked(cert) {
		return ErrRevoked
	}
	// CertChecker verifies the CA signature over the certificate (it also
	// repeats the validity check above); the principal is one the
	// certificate names, since any host it names may call us.
	checker := ssh.CertChecker{Clock: func() time.Time { return now }}
	if err := checker.CheckCert(cert.ValidPrincipals[0], cert); err != nil {
		return fmt.Errorf("%w: certificate: %w", ErrBadSignature, err)
	}
	return nil
}

func (v *Verifier) trusted(key ssh.PublicKey) bool {
	if v.HostCAs == nil {
		return false
	}
	want := key.Marshal()
	for _, ca := range v.HostCAs() {
		if ca != nil && bytes.Equal(ca.Marshal(), want) {
			return true
		}
	}
	return false
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *Verifier) maxSkew() time.Duration {
	if v.MaxSkew > 0 {
		return v.MaxSkew
	}
	return DefaultMaxSkew
}

func (v *Verifier) seen() func(string, time.Time) bool {
	if v.Seen != nil {
		return v.Seen
	}
	v.defaultSeen.Do(func() {
		c := &NonceCache{Now: v.Now}
		v.defaultSeenFunc = c.Seen
	})
	return v.defaultSeenFunc
}
