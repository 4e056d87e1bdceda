package keys

import (
	"context"
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/softkms"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

// CreateRequest describes a new softkms key.
type CreateRequest struct {
	// Dir is where NAME.key and NAME.pub go; it is made (0700) if missing.
	Dir string
	// Name is the file stem, e.g. "user-ca-production". No path separators.
	Name string
	// Type is the algorithm; the zero value is Ed25519.
	Type KeyType
	// Passphrase encrypts the private key at rest. Required.
	Passphrase []byte
	// Comment ends the .pub line (like ssh-keygen -C). Optional, one line.
	Comment string
	// X509 marks a key that signs X.509 only (the TLS root): no .pub file.
	X509 bool
}

// Check reports the first invalid field.
func (r CreateRequest) Check() error {
	switch {
	case r.Dir == "":
		return errors.New("empty Dir")
	case r.Name == "" || r.Name == "." || r.Name == ".." || strings.ContainsAny(r.Name, `/\`+"\x00"):
		return fmt.Errorf("invalid Name %q: not a plain file name", r.Name)
	case len(r.Passphrase) == 0:
		return fmt.Errorf("empty Passphrase: %w", ErrNoPassphrase)
	case strings.ContainsAny(r.Comment, "\r\n\x00"):
		return errors.New("multi-line Comment: must be one line")
	}
	_, err := r.Type.algorithm()
	return err
}

// KeyPath is DIR/NAME.key.
func (r CreateRequest) KeyPath() string { return filepath.Join(r.Dir, r.Name+".key") }

// PubPath is DIR/NAME.pub.
func (r CreateRequest) PubPath() string { return filepath.Join(r.Dir, r.Name+".pub") }

// Create makes a new key with softkms and writes DIR/NAME.key (encrypted
// PKCS#8 PEM, 0600) and, unless X509 is set, DIR/NAME.pub (an authorized_keys
// line, 0644). It refuses to overwrite either file (ErrExists).
func Create(ctx context.Context, r CreateRequest) (*Key, error) {
	if err := r.Check(); err != nil {
		return nil, fmt.Errorf("keys: create: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys: create: %w", err)
	}
	dir, err := filepath.Abs(r.Dir)
	if err != nil {
		return nil, fmt.Errorf("keys: create: %w", err)
	}
	r.Dir = dir
	keyPath, pubPath := r.KeyPath(), r.PubPath()
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("keys: create %s: %w", p, ErrExists)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("keys: create: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: create: %w", err)
	}

	alg, _ := r.Type.algorithm() // checked by Check
	signer, block, err := generate(ctx, alg, r.Passphrase, keyPath)
	if err != nil {
		return nil, fmt.Errorf("keys: create %s: %w", keyPath, err)
	}
	k, err := newKey(softURI(keyPath), signer)
	if err != nil {
		return nil, fmt.Errorf("keys: create %s: %w", keyPath, err)
	}

	var pubLine []byte
	if !r.X509 {
		pub, err := ssh.NewPublicKey(signer.Public())
		if err != nil {
			return nil, fmt.Errorf("keys: create %s: %w", pubPath, err)
		}
		pubLine = authorizedKeyLine(pub, r.Comment)
	}

	if err := writeNew(keyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("keys: create: %w", err)
	}
	if pubLine != nil {
		if err := writeNew(pubPath, pubLine, 0o644); err != nil {
			// Leave no half-made key behind: a retry must not hit ErrExists.
			_ = os.Remove(keyPath)
			return nil, fmt.Errorf("keys: create: %w", err)
		}
	}
	return k, nil
}

// authorizedKeyLine is "TYPE BASE64 [COMMENT]\n".
func authorizedKeyLine(pub ssh.PublicKey, comment string) []byte {
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pub)), "\n")
	if comment != "" {
		line += " " + comment
	}
	return []byte(line + "\n")
}

// writeNew creates path exclusively (O_EXCL: never replaces a file, never
// follows a symlink planted there), writes data with perm regardless of umask
// and fsyncs, so an acknowledged key is on disk.
func writeNew(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrExists)
		}
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// GeneratePEM makes a new ed25519 key in memory and returns it with its
// encrypted PKCS#8 PEM (the key file format, under passphrase), for a CA
// key kept in a store shared by replicas instead of a file.
func GeneratePEM(ctx context.Context, passphrase []byte) (*Key, []byte, error) {
	if len(passphrase) == 0 {
		return nil, nil, fmt.Errorf("keys: generate: %w", ErrNoPassphrase)
	}
	signer, block, err := generate(ctx, apiv1.PureEd25519, passphrase, "shared")
	if err != nil {
		return nil, nil, fmt.Errorf("keys: generate: %w", err)
	}
	k, err := newKey("shared", signer)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: generate: %w", err)
	}
	return k, pem.EncodeToMemory(block), nil
}

// ReadKeyPEM returns the encrypted PEM of the key file DIR/NAME.key as it
// is on disk (never decrypted), e.g. to share it with other replicas.
func ReadKeyPEM(dir, name string) ([]byte, error) {
	data, err := readSecretFile(filepath.Join(dir, name+".key"), maxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("keys: read %s: %w", name, err)
	}
	return data, nil
}

// TokenKeyURIOf returns the full pkcs11 URI (with its pin-source) of NAME's
// signing key when it is in a token, "" for a key file.
func TokenKeyURIOf(dir, name string) (string, error) {
	u, err := readTokenURI(dir, name)
	if err != nil {
		return "", fmt.Errorf("keys: %s: %w", name, err)
	}
	return u, nil
}

// generate makes a key with softkms, in memory, and its encrypted PKCS#8
// PEM block under passphrase.
func generate(ctx context.Context, alg apiv1.SignatureAlgorithm, passphrase []byte, name string) (crypto.Signer, *pem.Block, error) {
	km, err := softkms.New(ctx, apiv1.Options{Type: apiv1.SoftKMS})
	if err != nil {
		return nil, nil, err
	}
	defer km.Close()
	// softkms generates the key but does not store it (CreateKey returns it
	// in memory); we serialize it ourselves.
	resp, err := km.CreateKey(&apiv1.CreateKeyRequest{Name: name, SignatureAlgorithm: alg})
	if err != nil {
		return nil, nil, err
	}
	signer, ok := resp.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("softkms returned %T, not a signer", resp.PrivateKey)
	}
	// PKCS#8 for both types: pemutil then encrypts with PBES2 (PBKDF2-SHA256,
	// AES-256-CBC) rather than the legacy MD5-based PEM encryption it uses
	// for "EC PRIVATE KEY" blocks.
	block, err := pemutil.Serialize(signer, pemutil.WithPassword(passphrase), pemutil.WithPKCS8(true))
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt: %w", err)
	}
	return signer, block, nil
}
