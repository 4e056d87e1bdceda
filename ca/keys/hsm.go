package keys

import (
	"context"
	"fmt"
	"strings"
)

// PKCS11Scheme is the scheme of key URIs in a hardware module (RFC 7512),
// e.g. "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=sshward;
// id=01;object=host-ca?pin-source=/etc/sshward/hsm.pin". The key never
// leaves the module: it is made there (CreateInToken) and signs there.
// Only builds with the pkcs11 tag (and cgo) have the driver (hsm_pkcs11.go);
// the default build refuses the scheme with ErrUnsupportedKMS.
const PKCS11Scheme = "pkcs11"

// CreateInToken makes a new ECDSA P-256 key in the token the pkcs11 URI
// names (id= and object= name the key; both are required), marked
// sensitive and not extractable, and returns it ready to sign. It refuses a
// key that already exists there.
func CreateInToken(ctx context.Context, keyURI string) (*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys: create in token: %w", err)
	}
	if s, ok := uriScheme(keyURI); !ok || s != PKCS11Scheme {
		return nil, fmt.Errorf("keys: create in token: not a %s: uri", PKCS11Scheme)
	}
	k, err := createHSM(ctx, keyURI)
	if err != nil {
		return nil, fmt.Errorf("keys: create in token %s: %w", redactURI(keyURI), err)
	}
	return k, nil
}

// redactURI is a pkcs11 URI without its query (pin-value, pin-source) and
// without a pin-value attribute in its path: what logs and errors show.
func redactURI(raw string) string {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	parts := strings.Split(raw, ";")
	out := parts[:0]
	for _, p := range parts {
		if strings.Contains(strings.ToLower(p), "pin-value=") {
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ";")
}

// RedactURI is what logs and listings show of a key URI: a pkcs11 URI
// without its query (pin-source, pin-value) or any pin-value attribute.
func RedactURI(raw string) string { return redactURI(raw) }
