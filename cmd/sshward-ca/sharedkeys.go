package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/keys"
	"github.com/sshward/sshward/ca/store"
)

// sharedKeys keeps the CA key set in the store CA replicas share (etcd):
// one record per CA key (store meta "ca_key_NAME"), written by the
// replica that rotates or retires and read by all (ca/keysync.go). It is
// the KeyRotator and the KeySet of a replica.
//
// Where the private key is: a key in a PKCS#11 token is named by its URI
// (every replica reaches the same token key; the pin-source path must be
// the same on each), a software key is kept as its encrypted PKCS#8 PEM,
// exactly the bytes of its key file, under the CA passphrase every replica
// already shares (it opens the TLS root and the TOTP secret box). So a
// rotation through one replica needs nobody to copy a key file to the
// others, and the store (and its backups) hold only ciphertext, as the
// key directory does. A replica whose passphrase does not open the new key
// keeps its old keys and answers /readyz with the reason.
type sharedKeys struct {
	db    *store.DB
	l     layout
	pass  []byte
	log   *slog.Logger
	tiers []string // the policy's tiers

	mu   sync.Mutex
	open map[string]ssh.Signer // signers opened, by authorized_keys line (made by newSharedKeys)
}

func newSharedKeys(db *store.DB, l layout, pass []byte, log *slog.Logger, tiers []string) *sharedKeys {
	return &sharedKeys{db: db, l: l, pass: pass, log: log, tiers: tiers, open: map[string]ssh.Signer{}}
}

// keyRecord is the shared record of one CA key.
type keyRecord struct {
	Current  keyMaterial  `json:"current"`
	Previous *keyMaterial `json:"previous,omitempty"`
	// RotatedAt and RetireAt are set while Previous is trusted.
	RotatedAt time.Time `json:"rotated_at,omitzero"`
	RetireAt  time.Time `json:"retire_at,omitzero"`
}

// keyMaterial is one key: its public line and where its private half is
// (URI of a key in a token, or the encrypted PEM; a previous key keeps
// only its URI, to destroy it in the token when it retires).
type keyMaterial struct {
	Pub string `json:"pub"`
	URI string `json:"uri,omitempty"`
	PEM string `json:"pem,omitempty"`
}

func keyRecordName(l layout, id ca.KeyID) string { return "ca_key_" + l.keyName(id) }

func getKeyRecord(tx *store.Tx, l layout, id ca.KeyID) (*keyRecord, error) {
	b, err := tx.GetMeta(keyRecordName(l, id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r keyRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("shared record of %s: %w", id, err)
	}
	return &r, nil
}

func putKeyRecord(tx *store.Tx, l layout, id ca.KeyID, r *keyRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.PutMeta(keyRecordName(l, id), b)
}

func (k *sharedKeys) ids() []ca.KeyID {
	out := []ca.KeyID{ca.HostKey}
	for _, t := range k.tiers {
		out = append(out, ca.UserKey(t))
	}
	return out
}

// seed puts the keys of DIR/keys into the shared store for every CA key
// the store has no record of yet (the first replica to start on a new
// cluster, a tier added later). A record already there wins over the
// files: it may hold a rotation made through another replica.
func (k *sharedKeys) seed(ctx context.Context) error {
	for _, id := range k.ids() {
		name := k.l.keyName(id)
		ring, err := keys.LoadRing(ctx, k.l.keys(), name, k.pass)
		if err != nil {
			return err
		}
		pub, err := ring.Current.SSHSigner()
		ring.Current.Close()
		if err != nil {
			return err
		}
		rec := &keyRecord{Current: keyMaterial{Pub: keys.PublicLine(pub.PublicKey())}}
		if rec.Current.URI, err = keys.TokenKeyURIOf(k.l.keys(), name); err != nil {
			return err
		}
		if rec.Current.URI == "" {
			pemBytes, err := keys.ReadKeyPEM(k.l.keys(), name)
			if err != nil {
				return err
			}
			rec.Current.PEM = string(pemBytes)
		}
		if ring.Previous != nil {
			rec.Previous = &keyMaterial{Pub: keys.PublicLine(ring.Previous)}
			rec.RotatedAt, rec.RetireAt = ring.Rotation.RotateAt, ring.Rotation.RetireAt
		}
		err = k.db.Update(ctx, func(tx *store.Tx) error {
			if have, err := getKeyRecord(tx, k.l, id); err != nil || have != nil {
				return err
			}
			return putKeyRecord(tx, k.l, id, rec)
		})
		if err != nil {
			return fmt.Errorf("share %s: %w", id, err)
		}
	}
	return nil
}

// signer opens (once) the private half of m.
func (k *sharedKeys) signer(ctx context.Context, id ca.KeyID, m keyMaterial) (ssh.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, ok := k.open[m.Pub]; ok {
		return s, nil
	}
	var key *keys.Key
	var err error
	switch {
	case m.URI != "":
		key, err = keys.Open(ctx, m.URI, nil)
	case m.PEM != "":
		key, err = keys.OpenPEM(ctx, []byte(m.PEM), k.pass, id.String()+" (shared store)")
	default:
		err = fmt.Errorf("the shared record of %s has no private key", id)
	}
	if err != nil {
		return nil, err
	}
	s, err := key.SSHSigner()
	if err != nil {
		return nil, err
	}
	if got := keys.PublicLine(s.PublicKey()); got != m.Pub {
		key.Close()
		return nil, fmt.Errorf("the shared private key of %s does not match its public key", id)
	}
	k.open[m.Pub] = s
	return s, nil
}

// Load is ca.KeySet: the keys the store holds now.
func (k *sharedKeys) Load(ctx context.Context) (map[ca.KeyID]ssh.Signer, map[ca.KeyID]ca.PreviousKey, error) {
	recs := map[ca.KeyID]*keyRecord{}
	err := k.db.View(ctx, func(tx *store.Tx) error {
		for _, id := range k.ids() {
			r, err := getKeyRecord(tx, k.l, id)
			if err != nil {
				return err
			}
			if r != nil {
				recs[id] = r
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	cur, prev := map[ca.KeyID]ssh.Signer{}, map[ca.KeyID]ca.PreviousKey{}
	for id, r := range recs {
		s, err := k.signer(ctx, id, r.Current)
		if err != nil {
			return nil, nil, err
		}
		cur[id] = s
		if r.Previous != nil {
			pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(r.Previous.Pub))
			if err != nil {
				return nil, nil, fmt.Errorf("the shared previous key of %s: %w", id, err)
			}
			prev[id] = ca.PreviousKey{Key: pk, RetireAt: r.RetireAt}
		}
	}
	return cur, prev, nil
}

// Signs is ca.KeySet: whether pub is id's signing key in the store.
func (k *sharedKeys) Signs(tx *store.Tx, id ca.KeyID, pub ssh.PublicKey) (bool, error) {
	r, err := getKeyRecord(tx, k.l, id)
	if err != nil || r == nil {
		return true, err
	}
	return r.Current.Pub == keys.PublicLine(pub), nil
}

// Rotate is ca.KeyRotator: a new key (in the token of the current one, or
// a software key kept encrypted in the store) becomes id's signing key in
// the shared record, the current one its previous key until retireAt.
func (k *sharedKeys) Rotate(ctx context.Context, id ca.KeyID, now, retireAt time.Time) (ssh.Signer, error) {
	var rec *keyRecord
	err := k.db.View(ctx, func(tx *store.Tx) (err error) { rec, err = getKeyRecord(tx, k.l, id); return err })
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("the shared store has no record of %s", id)
	}
	if rec.Previous != nil {
		return nil, fmt.Errorf("%w (rotated through another replica)", ca.ErrRotationPending)
	}
	var next keyMaterial
	var key *keys.Key
	if rec.Current.URI != "" {
		if next.URI, err = keys.TokenKeyURI(rec.Current.URI, k.l.keyName(id), now); err != nil {
			return nil, err
		}
		key, err = keys.CreateInToken(ctx, next.URI)
	} else {
		var pemBytes []byte
		key, pemBytes, err = keys.GeneratePEM(ctx, k.pass)
		next.PEM = string(pemBytes)
	}
	if err != nil {
		return nil, err
	}
	s, err := key.SSHSigner()
	if err != nil {
		key.Close()
		return nil, err
	}
	next.Pub = keys.PublicLine(s.PublicKey())
	err = k.db.Update(ctx, func(tx *store.Tx) error {
		r, err := getKeyRecord(tx, k.l, id)
		if err != nil {
			return err
		}
		// Two replicas rotating at once: the store takes one.
		if r == nil || r.Previous != nil || r.Current.Pub != rec.Current.Pub {
			return fmt.Errorf("%w (rotated through another replica meanwhile)", ca.ErrRotationPending)
		}
		return putKeyRecord(tx, k.l, id, &keyRecord{Current: next, Previous: &keyMaterial{Pub: r.Current.Pub, URI: r.Current.URI},
			RotatedAt: now.UTC(), RetireAt: retireAt.UTC()})
	})
	if err != nil {
		key.Close()
		if next.URI != "" {
			k.destroy(ctx, next.URI)
		}
		return nil, err
	}
	k.mu.Lock()
	k.open[next.Pub] = s
	k.mu.Unlock()
	return s, nil
}

// Retire is ca.KeyRotator: the shared record forgets id's previous key (a
// key in a token is destroyed there once the store says so).
func (k *sharedKeys) Retire(ctx context.Context, id ca.KeyID) error {
	var gone *keyMaterial
	err := k.db.Update(ctx, func(tx *store.Tx) error {
		r, err := getKeyRecord(tx, k.l, id)
		if err != nil {
			return err
		}
		if r == nil || r.Previous == nil {
			return fmt.Errorf("%w (retired through another replica)", ca.ErrNoPreviousKey)
		}
		gone = r.Previous
		r.Previous, r.RotatedAt, r.RetireAt = nil, time.Time{}, time.Time{}
		return putKeyRecord(tx, k.l, id, r)
	})
	if err != nil {
		return err
	}
	if gone.URI != "" {
		k.destroy(ctx, gone.URI)
	}
	return nil
}

// destroy deletes a key from its token; a failure is logged (the key is
// no longer trusted either way).
func (k *sharedKeys) destroy(ctx context.Context, uri string) {
	if err := keys.DeleteInToken(ctx, uri); err != nil && k.log != nil {
		k.log.WarnContext(ctx, "could not destroy a retired CA key in its token", "err", err)
	}
}

// keySource reads which CA keys are trusted: on etcd the shared store
// (where a rotation through any replica is), else DIR/keys.
type keySource struct {
	l  layout
	db *store.DB // nil: the files
}

func openKeySource(ctx context.Context, l layout) (*keySource, error) {
	cfg, err := loadConfig(l.config())
	if err != nil {
		return nil, err
	}
	ks := &keySource{l: l}
	if cfg.Store.Etcd != nil {
		if ks.db, err = openStore(ctx, l, nil, 0); err != nil {
			return nil, err
		}
	}
	return ks, nil
}

func (ks *keySource) Close() {
	if ks.db != nil {
		ks.db.Close()
	}
}

// record is id's shared record, nil on the files or when the store has
// none yet (no replica has started).
func (ks *keySource) record(ctx context.Context, id ca.KeyID) (*keyRecord, error) {
	if ks.db == nil {
		return nil, nil
	}
	var r *keyRecord
	err := ks.db.View(ctx, func(tx *store.Tx) (err error) { r, err = getKeyRecord(tx, ks.l, id); return err })
	return r, err
}

// lines are id's trusted keys at now: the signing key, then the previous
// one during its overlap.
func (ks *keySource) lines(ctx context.Context, id ca.KeyID, now time.Time) ([]string, error) {
	r, err := ks.record(ctx, id)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return trustedPubLines(ks.l, id, now)
	}
	out := []string{r.Current.Pub + " " + keyComment(id)}
	if r.Previous != nil && now.Before(r.RetireAt) {
		out = append(out, r.Previous.Pub+" "+keyComment(id)+" (previous, retires "+r.RetireAt.UTC().Format(time.RFC3339)+")")
	}
	return out, nil
}

// info is id's line of keys list from the shared record; ok false when
// there is none (read the files).
func (ks *keySource) info(ctx context.Context, id ca.KeyID) (keyInfo, bool, error) {
	r, err := ks.record(ctx, id)
	if err != nil || r == nil {
		return keyInfo{}, false, err
	}
	fp := func(line string) (string, error) {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return "", fmt.Errorf("the shared record of %s: %w", id, err)
		}
		return ssh.FingerprintSHA256(k), nil
	}
	ki := keyInfo{Tier: id.Tier, HostCA: id.Host, RetireAt: r.RetireAt}
	if ki.Current, err = fp(r.Current.Pub); err != nil {
		return ki, false, err
	}
	if r.Current.URI != "" {
		ki.URI = keys.RedactURI(r.Current.URI)
	}
	if r.Previous != nil {
		if ki.Previous, err = fp(r.Previous.Pub); err != nil {
			return ki, false, err
		}
	}
	return ki, true, nil
}
