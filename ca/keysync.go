package ca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/store"
)

// CA key rotation across replicas (issue 14 with issue 11). On a store
// several replicas share, the CA key set (which key signs, which previous
// key is trusted until when) lives in that store, written by the replica
// that rotates or retires (KeyRotator) and read by every other one:
//
//   - every replica re-reads it often (RunKeySync) and swaps its keys and
//     trust (the revocation stream tells agents at once);
//   - a user certificate is recorded in the same transaction that checks
//     its signing key is still the store's (KeySet.Signs): one signed by
//     a replica that has not yet seen a rotation is re-signed with the new
//     key before it is answered, so no certificate issued after a
//     rotation committed carries the old key;
//   - rotate and retire re-read the set first, so they act on what the
//     store holds, whichever replica made the last step.

// KeySet is the CA key set in the shared store (cmd/sshward-ca).
type KeySet interface {
	// Load returns the keys the store holds now: the signer and the
	// previous key (zero when none) of each CA key it has a record of.
	Load(ctx context.Context) (map[KeyID]ssh.Signer, map[KeyID]PreviousKey, error)
	// Signs reports, in tx, whether pub is id's signing key in the store
	// (true when the store has no record of id).
	Signs(tx *store.Tx, id KeyID, pub ssh.PublicKey) (bool, error)
}

// ErrKeysChanged means the store's signing key of a CA key is not the one
// this replica signed with: another replica rotated it.
var ErrKeysChanged = errors.New("ca: the CA key was rotated by another replica")

// keySyncState is the outcome of the last key sync (for Ready).
type keySyncState struct {
	mu   sync.Mutex
	err  error
	busy sync.Mutex // one sync at a time
}

// SyncKeys reads the key set from the shared store and takes it: a new
// signing key, a new or retired previous key. It is a no-op without a
// KeySet.
func (a *Authority) SyncKeys(ctx context.Context) error {
	if a.cfg.KeySet == nil {
		return nil
	}
	a.keySync.busy.Lock()
	defer a.keySync.busy.Unlock()
	cur, prev, err := a.cfg.KeySet.Load(ctx)
	a.keySync.mu.Lock()
	a.keySync.err = err
	a.keySync.mu.Unlock()
	if err != nil {
		return fmt.Errorf("ca: read the shared CA keys: %w", err)
	}
	changed := false
	a.keys.mu.Lock()
	for id, s := range cur {
		if old := a.keys.cur[id]; old == nil || !bytes.Equal(old.PublicKey().Marshal(), s.PublicKey().Marshal()) {
			a.keys.cur[id] = s
			changed = true
			a.cfg.Logger.InfoContext(ctx, "CA key changed by another replica", "key", id.String(), "current", ssh.FingerprintSHA256(s.PublicKey()))
		}
		p, had := a.keys.prev[id]
		np, has := prev[id]
		switch {
		case has && (!had || !bytes.Equal(p.Key.Marshal(), np.Key.Marshal()) || !p.RetireAt.Equal(np.RetireAt)):
			a.keys.prev[id] = np
			changed = true
		case !has && had:
			delete(a.keys.prev, id)
			changed = true
		}
	}
	a.keys.mu.Unlock()
	if changed {
		a.keys.hub.publish()
	}
	return nil
}

// RunKeySync re-reads the shared key set every interval (default 1s)
// until ctx ends; a no-op without a KeySet.
func (a *Authority) RunKeySync(ctx context.Context, interval time.Duration) error {
	if a.cfg.KeySet == nil {
		return nil
	}
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := a.SyncKeys(ctx); err != nil && ctx.Err() == nil {
			a.cfg.Logger.WarnContext(ctx, "ca: key sync failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// keySyncErr is why the last sync failed, nil when it worked.
func (a *Authority) keySyncErr() error {
	a.keySync.mu.Lock()
	defer a.keySync.mu.Unlock()
	return a.keySync.err
}

// stillSigns is KeySet.Signs for a transaction that records a certificate
// signed by signer: ErrKeysChanged when another replica rotated id.
func (a *Authority) stillSigns(tx *store.Tx, id KeyID, signer ssh.Signer) error {
	if a.cfg.KeySet == nil {
		return nil
	}
	ok, err := a.cfg.KeySet.Signs(tx, id, signer.PublicKey())
	if err != nil {
		return err
	}
	if !ok {
		return ErrKeysChanged
	}
	return nil
}
