package keys

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.step.sm/crypto/kms/uri"
	"golang.org/x/crypto/ssh"
)

// CA keys in a token (issue 14). A key NAME kept in a hardware module has
// no private file: DIR/NAME.uri (0600) holds the pkcs11 URI of the key
// that signs, beside DIR/NAME.pub as for a key file. Rotation and
// retirement move NAME.uri exactly as they move NAME.key (rotate.go): the
// previous key is DIR/NAME.prev.uri during its overlap.

func uriPath(dir, name string) string { return filepath.Join(dir, name+".uri") }

// maxURIFileSize bounds a NAME.uri file: one URI.
const maxURIFileSize = 4 << 10

// readTokenURI returns the URI in DIR/NAME.uri, "" when there is none.
func readTokenURI(dir, name string) (string, error) {
	data, err := readSecretFile(uriPath(dir, name), maxURIFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	u := strings.TrimSpace(string(data))
	if s, ok := uriScheme(u); !ok || s != PKCS11Scheme {
		return "", fmt.Errorf("%s does not hold a %s: uri", uriPath(dir, name), PKCS11Scheme)
	}
	return u, nil
}

// RingExists reports whether DIR holds CA key NAME, as a key file or as a
// key in a token.
func RingExists(dir, name string) (bool, error) {
	for _, p := range []string{filepath.Join(dir, name+".key"), uriPath(dir, name)} {
		if _, err := os.Lstat(p); err == nil {
			return true, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	return false, nil
}

// TokenURI returns the pkcs11 URI of NAME's signing key (without its PIN
// part: redacted, for display), or "" when NAME is a key file.
func TokenURI(dir, name string) (string, error) {
	u, err := readTokenURI(dir, name)
	if err != nil {
		return "", fmt.Errorf("keys: %s: %w", name, err)
	}
	if u == "" {
		return "", nil
	}
	return redactURI(u), nil
}

// TokenRequest names a key in a token that becomes CA key NAME in Dir.
type TokenRequest struct {
	Dir, Name string
	// URI is the key's pkcs11 URI (id= and object= name it in the token;
	// pin-source names the PIN file).
	URI string
	// Create makes the key in the token (refused when it exists there);
	// otherwise the key must already be there (made by the HSM's tools).
	Create  bool
	Comment string
}

// AddToken records a key in a token as CA key NAME: DIR/NAME.uri and
// DIR/NAME.pub. It refuses when NAME exists already (ErrExists).
func AddToken(ctx context.Context, r TokenRequest) (*Key, error) {
	if exists, err := RingExists(r.Dir, r.Name); err != nil {
		return nil, fmt.Errorf("keys: add %s: %w", r.Name, err)
	} else if exists {
		return nil, fmt.Errorf("keys: add %s: %w", r.Name, ErrExists)
	}
	if err := CheckTokenURI(r.URI); err != nil {
		return nil, fmt.Errorf("keys: add %s: %w", r.Name, err)
	}
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: add %s: %w", r.Name, err)
	}
	var k *Key
	var err error
	if r.Create {
		k, err = CreateInToken(ctx, r.URI)
	} else {
		k, err = Open(ctx, r.URI, nil)
	}
	if err != nil {
		return nil, err
	}
	if err := writeTokenRef(r.Dir, r.Name, r.URI, k, r.Comment); err != nil {
		k.Close()
		return nil, fmt.Errorf("keys: add %s: %w", r.Name, err)
	}
	return k, nil
}

// writeTokenRef writes NAME.pub, then NAME.uri (which makes the key exist
// for LoadRing), both new.
func writeTokenRef(dir, name, keyURI string, k *Key, comment string) error {
	pub, err := ssh.NewPublicKey(k.Public())
	if err != nil {
		return err
	}
	pubPath := filepath.Join(dir, name+".pub")
	if err := writeNew(pubPath, authorizedKeyLine(pub, comment), 0o644); err != nil {
		return err
	}
	if err := writeNew(uriPath(dir, name), []byte(keyURI+"\n"), 0o600); err != nil {
		_ = os.Remove(pubPath)
		return err
	}
	return nil
}

// CheckTokenURI checks a pkcs11 key URI sshward-ca is given: the PIN must
// come from a file (pin-source) only its owner may read, never from the
// URI itself (pin-value would sit in config.yaml, key files and process
// listings).
func CheckTokenURI(raw string) error {
	if s, ok := uriScheme(raw); !ok || s != PKCS11Scheme {
		return fmt.Errorf("not a %s: uri", PKCS11Scheme)
	}
	if strings.Contains(strings.ToLower(raw), "pin-value") {
		return errors.New("the key uri holds pin-value: put the PIN in a file (mode 0600) and name it with ?pin-source=FILE")
	}
	u, err := uri.ParseWithScheme(PKCS11Scheme, raw)
	if err != nil {
		return fmt.Errorf("malformed %s uri %s", PKCS11Scheme, redactURI(raw))
	}
	src := u.Get("pin-source")
	if src == "" {
		return fmt.Errorf("%s names no pin-source: add ?pin-source=FILE (the PIN, mode 0600)", redactURI(raw))
	}
	if _, err := readSecretFile(src, maxPassphraseFileSize); err != nil {
		return fmt.Errorf("pin-source %s: %w", src, err)
	}
	return nil
}

// TokenKeyURI is the URI of a new key in the token base names (module,
// token and pin-source; any id= or object= in base is replaced): object
// label sshward-NAME-STAMP and a fresh random 8-byte id, so each key a rotation
// makes is a new object beside the old one.
func TokenKeyURI(base, name string, now time.Time) (string, error) {
	if s, ok := uriScheme(base); !ok || s != PKCS11Scheme {
		return "", fmt.Errorf("keys: %s is not a %s: uri", redactURI(base), PKCS11Scheme)
	}
	path, query, _ := strings.Cut(base, "?")
	var attrs []string
	for _, a := range strings.Split(strings.TrimPrefix(path, PKCS11Scheme+":"), ";") {
		k, _, _ := strings.Cut(a, "=")
		if a == "" || strings.EqualFold(k, "id") || strings.EqualFold(k, "object") {
			continue
		}
		attrs = append(attrs, a)
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return "", err
	}
	attrs = append(attrs, "id="+hex.EncodeToString(id), "object=sshward-"+name+"-"+now.UTC().Format("20060102T150405Z"))
	out := PKCS11Scheme + ":" + strings.Join(attrs, ";")
	if query != "" {
		out += "?" + query
	}
	return out, nil
}

// deleteTokenKey destroys the key of a retired NAME.prev.uri in its token.
func deleteTokenKey(ctx context.Context, dir, name string) error {
	u, err := readTokenURI(dir, name)
	if err != nil || u == "" {
		return err
	}
	return DeleteInToken(ctx, u)
}

// DeleteInToken destroys the key pair a pkcs11 URI names in its token (a
// retired CA key); a key that is not there is no error.
func DeleteInToken(ctx context.Context, keyURI string) error {
	if err := deleteHSM(ctx, keyURI); err != nil {
		return fmt.Errorf("keys: delete %s from its token: %w", redactURI(keyURI), err)
	}
	return nil
}
