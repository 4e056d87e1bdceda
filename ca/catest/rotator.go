package catest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
)

// MemRotator is a ca.KeyRotator that keeps new keys in memory (the files
// are ca/keys' and sshward-ca's tests). It counts retirements.
type MemRotator struct {
	mu      sync.Mutex // guards retired
	retired int
}

// Rotate returns a fresh ed25519 signer.
func (m *MemRotator) Rotate(context.Context, ca.KeyID, time.Time, time.Time) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// Retire counts the retirement.
func (m *MemRotator) Retire(context.Context, ca.KeyID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retired++
	return nil
}

// Retired is how many keys were retired.
func (m *MemRotator) Retired() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.retired
}
