package ca

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/sshward/sshward/ca/store"
)

// sealedPrefix marks a secret stored encrypted by a SecretBox.
const sealedPrefix = "enc1:"

// metaSecretsSalt is the store meta key of the SecretBox's KDF salt.
const metaSecretsSalt = "secrets_kdf_salt"

// ErrSecretsLocked: a stored secret is encrypted and this process has no
// SecretBox (the CA passphrase was not given).
var ErrSecretsLocked = errors.New("ca: stored secrets are encrypted and the CA passphrase was not given")

// SecretBox encrypts secrets kept in the CA store (TOTP secrets) with a key
// derived from the CA passphrase (argon2id, salt kept in the store), with
// AES-256-GCM. A stolen store file or backup holds no usable TOTP secret.
// Each secret is bound to its owner (the user name is the associated data),
// so a sealed secret cannot be moved to another user.
type SecretBox struct {
	aead cipher.AEAD
	rand io.Reader
}

// NewSecretBox derives the box of db from passphrase, creating the salt on
// first use.
func NewSecretBox(ctx context.Context, db *store.DB, passphrase []byte) (*SecretBox, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("ca: secret box: empty passphrase")
	}
	var salt []byte
	err := db.Update(ctx, func(tx *store.Tx) error {
		v, err := tx.GetMeta(metaSecretsSalt)
		if err == nil && len(v) == 16 {
			salt = v
			return nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		salt = make([]byte, 16)
		if _, err := io.ReadFull(rand.Reader, salt); err != nil {
			return err
		}
		return tx.PutMeta(metaSecretsSalt, salt)
	})
	if err != nil {
		return nil, fmt.Errorf("ca: secret box salt: %w", err)
	}
	key := argon2.IDKey(passphrase, salt, 3, 64*1024, 2, 32)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("ca: secret box: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("ca: secret box: %w", err)
	}
	return &SecretBox{aead: aead, rand: rand.Reader}, nil
}

// Seal encrypts plain for owner.
func (b *SecretBox) Seal(plain, owner string) (string, error) {
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := io.ReadFull(b.rand, nonce); err != nil {
		return "", fmt.Errorf("ca: seal secret: %w", err)
	}
	ct := b.aead.Seal(nonce, nonce, []byte(plain), []byte(owner))
	return sealedPrefix + base64.RawStdEncoding.EncodeToString(ct), nil
}

// open returns the plain secret of stored for owner: stored as is when it
// was never sealed (written before encryption, migrated at the next start).
func (b *SecretBox) open(stored, owner string) (string, error) {
	enc, sealed := strings.CutPrefix(stored, sealedPrefix)
	if !sealed {
		return stored, nil
	}
	if b == nil {
		return "", ErrSecretsLocked
	}
	raw, err := base64.RawStdEncoding.DecodeString(enc)
	if err != nil || len(raw) < b.aead.NonceSize() {
		return "", errors.New("ca: open secret: malformed")
	}
	plain, err := b.aead.Open(nil, raw[:b.aead.NonceSize()], raw[b.aead.NonceSize():], []byte(owner))
	if err != nil {
		return "", errors.New("ca: open secret: wrong passphrase or damaged secret")
	}
	return string(plain), nil
}

func isSealed(stored string) bool { return strings.HasPrefix(stored, sealedPrefix) }

// sealPlaintextSecrets encrypts every TOTP secret still stored in clear (from
// before encryption, or added offline without the passphrase), in one
// transaction. It returns how many it sealed.
func (a *Admin) sealPlaintextSecrets(ctx context.Context) (int, error) {
	if a.cfg.Secrets == nil {
		return 0, nil
	}
	n := 0
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		users, err := tx.ListUsers()
		if err != nil {
			return err
		}
		for i := range users {
			u := &users[i]
			if u.TOTPSecret == "" || isSealed(u.TOTPSecret) {
				continue
			}
			if u.TOTPSecret, err = a.cfg.Secrets.Seal(u.TOTPSecret, u.Name); err != nil {
				return err
			}
			if err := tx.PutUser(u); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ca: encrypt stored TOTP secrets: %w", err)
	}
	return n, nil
}
