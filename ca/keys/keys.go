package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/softkms"
	"golang.org/x/crypto/ssh"
)

// KeyType selects the algorithm of a new key.
type KeyType int

const (
	// Ed25519 is the default: SSH user and host CAs.
	Ed25519 KeyType = iota
	// ECDSAP256 is for the internal X.509 root (TLS clients everywhere speak
	// P-256; ed25519 TLS certificates are still poorly supported).
	ECDSAP256
)

// String returns the name used in errors.
func (t KeyType) String() string {
	switch t {
	case Ed25519:
		return "ed25519"
	case ECDSAP256:
		return "ecdsa-p256"
	default:
		return fmt.Sprintf("KeyType(%d)", int(t))
	}
}

func (t KeyType) algorithm() (apiv1.SignatureAlgorithm, error) {
	switch t {
	case Ed25519:
		return apiv1.PureEd25519, nil
	case ECDSAP256:
		return apiv1.ECDSAWithSHA256, nil
	default:
		return 0, fmt.Errorf("unknown key type %v", t)
	}
}

// Key is a signing key held by a KMS. It is safe for concurrent use; a Key
// never prints its private part (String, GoString and LogValue show the URI).
type Key struct {
	uri       string
	signer    crypto.Signer
	sshSigner ssh.Signer
	closer    io.Closer // the module session of a key in a token; nil for softkms
}

// Close ends the session with a hardware module holding the key; a no-op
// for a software key. The Key must not sign after Close.
func (k *Key) Close() error {
	if k.closer == nil {
		return nil
	}
	return k.closer.Close()
}

// newKey wraps a KMS signer. The ssh.Signer is built once here: for a
// software key the crypto.Signer is the plain ed25519.PrivateKey or
// *ecdsa.PrivateKey that pemutil parsed, so ssh.NewSignerFromSigner takes
// exactly the path ssh.NewSignerFromKey takes for a raw key, with no extra
// indirection per signature.
func newKey(uri string, signer crypto.Signer) (*Key, error) {
	switch signer.Public().(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, fmt.Errorf("unsupported public key type %T", signer.Public())
	}
	sshSigner, err := ssh.NewSignerFromSigner(signer)
	if err != nil {
		return nil, err
	}
	return &Key{uri: uri, signer: signer, sshSigner: sshSigner}, nil
}

// Signer returns the key as a crypto.Signer (for X.509 signing).
func (k *Key) Signer() crypto.Signer { return k.signer }

// SSHSigner returns the key as an ssh.Signer (for SSH certificates). The
// error is for KMS drivers whose keys cannot sign SSH; softkms keys always can.
func (k *Key) SSHSigner() (ssh.Signer, error) { return k.sshSigner, nil }

// Public returns the public key.
func (k *Key) Public() crypto.PublicKey { return k.signer.Public() }

// URI returns the key's URI, e.g. "softkms:path=/srv/ca/user-ca.key".
func (k *Key) URI() string { return k.uri }

// String keeps private key bytes out of logs and %v.
func (k *Key) String() string { return "keys.Key(" + k.uri + ")" }

// GoString keeps private key bytes out of %#v.
func (k *Key) GoString() string { return k.String() }

// LogValue keeps private key bytes out of slog.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.uri) }

// maxKeyFileSize bounds what Open reads; a P-256 or ed25519 encrypted PEM is
// well under 1 KiB.
const maxKeyFileSize = 64 << 10

// Open loads a key by URI: "softkms:path=/abs/file.key" or a plain file path
// (the same), or "pkcs11:…" for a key in a hardware module (hsm.go; only in
// builds with the pkcs11 tag). Any other scheme fails with ErrUnsupportedKMS
// naming the scheme. A wrong passphrase
// fails with ErrBadPassphrase; the passphrase is never part of an error.
func Open(ctx context.Context, uri string, passphrase []byte) (*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys: open: %w", err)
	}
	scheme, path, err := parseURI(uri)
	if err != nil {
		return nil, fmt.Errorf("keys: open: %w", err)
	}
	switch scheme {
	case softkms.Scheme:
		return openSoft(ctx, path, passphrase)
	case PKCS11Scheme:
		// The passphrase is not used: the URI's pin-source (or pin-value)
		// logs in to the token.
		k, err := openHSM(ctx, uri)
		if err != nil {
			return nil, fmt.Errorf("keys: open %s: %w", redactURI(uri), err)
		}
		return k, nil
	default:
		// Name the scheme only: the rest of a KMS URI may hold a PIN.
		return nil, fmt.Errorf("keys: open: kms scheme %q: %w (this build has softkms only)", scheme, ErrUnsupportedKMS)
	}
}

func openSoft(ctx context.Context, path string, passphrase []byte) (*Key, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("keys: open: %w", err)
	}
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("keys: open %s: %w", path, ErrNoPassphrase)
	}
	data, err := readSecretFile(path, maxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("keys: open %s: %w", path, err)
	}
	return openPEM(ctx, data, passphrase, path)
}

// OpenPEM opens an encrypted PKCS#8 PEM key held elsewhere than in a file
// (a CA key kept in the store CA replicas share); name is what errors call
// it.
func OpenPEM(ctx context.Context, data, passphrase []byte, name string) (*Key, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("keys: open %s: %w", name, ErrNoPassphrase)
	}
	return openPEM(ctx, data, passphrase, name)
}

func openPEM(ctx context.Context, data, passphrase []byte, path string) (*Key, error) {
	// Check the envelope ourselves before softkms parses it: a plaintext key
	// would load without the passphrase, and only an encrypted PKCS#8 block
	// tells a wrong passphrase apart from other damage.
	block, rest := pem.Decode(data)
	if block == nil || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("keys: open %s: not a single PEM block", path)
	}
	if block.Type != "ENCRYPTED PRIVATE KEY" {
		return nil, fmt.Errorf("keys: open %s: %w (PEM type %q)", path, ErrNotEncrypted, block.Type)
	}

	km, err := softkms.New(ctx, apiv1.Options{Type: apiv1.SoftKMS})
	if err != nil {
		return nil, fmt.Errorf("keys: open %s: %w", path, err)
	}
	defer km.Close()
	signer, err := km.CreateSigner(&apiv1.CreateSignerRequest{
		SigningKeyPEM: data,
		Password:      passphrase,
	})
	if err != nil {
		// The PEM is a well-formed encrypted PKCS#8 envelope, so a failure
		// here is the padding check (x509.IncorrectPasswordError) or, when a
		// wrong key happens to pass it, the ASN.1 parse of garbage. Neither
		// message carries the passphrase, but we drop the detail anyway.
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, fmt.Errorf("keys: open %s: %w", path, ErrBadPassphrase)
		}
		return nil, fmt.Errorf("keys: open %s: %w or damaged key file", path, ErrBadPassphrase)
	}
	k, err := newKey(softURI(path), signer)
	if err != nil {
		return nil, fmt.Errorf("keys: open %s: %w", path, err)
	}
	return k, nil
}

// readSecretFile reads a file that must be private to its owner: like
// OpenSSH with private keys, refuse it when group or others may access it.
// The mode is checked on the opened file, not the name, so a swap between
// check and read cannot slip past.
func readSecretFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w (mode %#o): run chmod 600 %s", ErrInsecureFile, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("file larger than %d bytes", limit)
	}
	return data, nil
}
