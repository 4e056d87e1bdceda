package tlsca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"fmt"
	"sync"
	"time"
)

// ServerTLSConfig returns a server config that presents an in-memory ECDSA
// P-256 leaf for names, issued by this root, with the chain leaf + root (the
// root is what a bootstrapping client pins). The leaf lives for ttl and is
// re-minted, with a fresh key, on the first handshake after less than a third
// of ttl is left; no file and no restart is involved. TLS 1.2 and up.
func (r *Root) ServerTLSConfig(names []string, ttl time.Duration, now func() time.Time) (*tls.Config, error) {
	if now == nil {
		now = time.Now
	}
	// Fail at start on bad names or ttl, not at the first handshake.
	if _, err := serverTemplate(names, ttl, now()); err != nil {
		return nil, fmt.Errorf("tlsca: server config: %w", err)
	}
	lc := &leafCache{root: r, names: append([]string(nil), names...), ttl: ttl, now: now}
	if _, err := lc.get(); err != nil {
		return nil, fmt.Errorf("tlsca: server config: %w", err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return lc.get()
		},
	}, nil
}

// leafCache holds the current server leaf and re-mints it when due.
type leafCache struct {
	root  *Root
	names []string
	ttl   time.Duration
	now   func() time.Time

	mu      sync.Mutex // guards the fields below
	cert    *tls.Certificate
	renewAt time.Time // NotAfter - ttl/3
}

// get returns the current leaf, minting a new one when it is due. Minting is
// one ECDSA key generation and one signature (well under a millisecond), so
// doing it under the lock, at most once per ttl*2/3, costs nothing worth a
// background goroutine.
func (lc *leafCache) get() (*tls.Certificate, error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	now := lc.now()
	if lc.cert != nil && now.Before(lc.renewAt) {
		return lc.cert, nil
	}
	cert, err := lc.mint(now)
	if err != nil {
		// Keep serving the old leaf while it is valid: a failed renewal
		// must not take the server down before it has to.
		if lc.cert != nil && now.Before(lc.cert.Leaf.NotAfter) {
			return lc.cert, nil
		}
		return nil, err
	}
	lc.cert = cert
	lc.renewAt = cert.Leaf.NotAfter.Add(-lc.ttl / 3)
	return cert, nil
}

func (lc *leafCache) mint(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), lc.root.rand)
	if err != nil {
		return nil, fmt.Errorf("tlsca: mint server leaf: %w", err)
	}
	leaf, err := lc.root.IssueServer(lc.names, key.Public(), lc.ttl, now)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{
		Certificate: [][]byte{leaf.Raw, lc.root.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}
