package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"filippo.io/age"
)

// searchKeyFile holds, with Config.Keys, the key of search.db's values
// (the indexed text, the terms of each segment, the marker labels),
// encrypted with age to the recipients of the day it was made: the search
// index holds session text, so it is encrypted at rest like the casts.
// Bucket keys (a recording's start and id, numbers) stay in the clear.
const searchKeyFile = "search.key"

// valueSealer encrypts search.db values (AES-256-GCM, a random nonce per
// value). A nil *valueSealer leaves values as they are.
type valueSealer struct{ aead cipher.AEAD }

func newValueSealer(key []byte) (*valueSealer, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &valueSealer{aead: g}, nil
}

func (v *valueSealer) seal(p []byte) []byte {
	if v == nil {
		return p
	}
	out := make([]byte, v.aead.NonceSize(), v.aead.NonceSize()+len(p)+v.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return v.aead.Seal(out, out, p, nil)
}

var errSealedValue = errors.New("store: a search index value does not decrypt")

func (v *valueSealer) open(c []byte) ([]byte, error) {
	if v == nil || c == nil {
		return c, nil
	}
	n := v.aead.NonceSize()
	if len(c) < n+v.aead.Overhead() {
		return nil, errSealedValue
	}
	p, err := v.aead.Open(nil, c[:n], c[n:], nil)
	if err != nil {
		return nil, errSealedValue
	}
	return p, nil
}

// prepareSearchKey returns the sealer of search.db's values. With Keys it
// reads search.key (decrypting it with Keys' identities) or, when there is
// none or none of the identities opens it, removes search.db (it is
// rebuilt from the casts in the background, as after an upgrade) and makes
// a new key. Without Keys, a search.db that was encrypted is removed too
// (rebuilt in plaintext).
func prepareSearchKey(cfg Config) (*valueSealer, error) {
	keyPath := filepath.Join(cfg.Dir, searchKeyFile)
	dropIndex := func() error {
		if err := os.Remove(filepath.Join(cfg.Dir, searchDB)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	data, err := os.ReadFile(keyPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: read %s: %w", searchKeyFile, err)
	}
	if cfg.Keys == nil || len(cfg.Keys.Recipients) == 0 {
		if data == nil {
			return nil, nil
		}
		cfg.Logger.Warn("store: recordings are no longer encrypted: the encrypted search index is removed and rebuilt")
		if err := dropIndex(); err != nil {
			return nil, err
		}
		return nil, os.Remove(keyPath)
	}
	if data != nil {
		r, err := age.Decrypt(bytes.NewReader(data), cfg.Keys.Identities...)
		if err == nil {
			key, err := io.ReadAll(io.LimitReader(r, 64))
			if err == nil && len(key) == 32 {
				return newValueSealer(key)
			}
		}
		cfg.Logger.Warn("store: no configured identity opens search.key: the search index is removed and rebuilt from the recordings")
	}
	if err := dropIndex(); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, cfg.Keys.Recipients...)
	if err != nil {
		return nil, err
	}
	w.Write(key)
	if err := w.Close(); err != nil {
		return nil, err
	}
	tmp := keyPath + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("store: write %s: %w", searchKeyFile, err)
	}
	if err := os.Rename(tmp, keyPath); err != nil {
		return nil, fmt.Errorf("store: write %s: %w", searchKeyFile, err)
	}
	return newValueSealer(key)
}
