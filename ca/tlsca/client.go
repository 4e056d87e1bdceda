package tlsca

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// PinnedClientConfig is the bootstrap client config: it trusts the server's
// chain only if it ends in a self-signed CA whose SHA-256 fingerprint is
// fingerprint, then verifies the leaf against that root as usual (validity,
// serverAuth and the host name the client dialled). Nothing is trusted on
// first use. A mismatch fails the handshake with a *FingerprintMismatchError.
//
// The host name checked is the connection's SNI name. A client that dials an
// IP address sends none; rather than skip the check, the handshake then fails
// with ErrNoServerName: use PinnedClientConfigFor with the address instead.
func PinnedClientConfig(fingerprint string) *tls.Config {
	return PinnedClientConfigFor(fingerprint, "")
}

// PinnedClientConfigFor is PinnedClientConfig that verifies the leaf for
// serverName (a DNS name or an IP address) whatever the connection's SNI. An
// empty serverName means "the SNI name", as in PinnedClientConfig.
func PinnedClientConfigFor(fingerprint, serverName string) *tls.Config {
	want, pinErr := normalizeFingerprint(fingerprint)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The standard verification needs the root up front, which is the
		// thing we are bootstrapping. VerifyConnection below replaces it and
		// runs on every handshake, resumed ones included.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if pinErr != nil {
				return pinErr
			}
			name := serverName
			if name == "" {
				name = cs.ServerName
			}
			if name == "" {
				return fmt.Errorf("tlsca: %w: the server was dialled by IP address, which sends no name; use PinnedClientConfigFor(fingerprint, address)", ErrNoServerName)
			}
			_, err := verifyPinned(cs.PeerCertificates, want, name)
			return err
		},
	}
}

// PinnedRoot returns the root of a connection made with a pinned config, so
// the client can keep it (EncodePEM) and use ClientConfigFromPEM afterwards.
// It re-checks the pin; it does not check the host name.
func PinnedRoot(cs tls.ConnectionState, fingerprint string) (*x509.Certificate, error) {
	want, err := normalizeFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	return verifyPinned(cs.PeerCertificates, want, "")
}

// verifyPinned finds the pinned root among the certificates after the leaf,
// checks it is a self-signed CA, and verifies the leaf against it alone.
// An empty name skips the host-name check.
func verifyPinned(chain []*x509.Certificate, want, name string) (*x509.Certificate, error) {
	if len(chain) < 2 {
		got := "(none sent)"
		if len(chain) == 1 {
			got = Fingerprint(chain[0])
		}
		return nil, &FingerprintMismatchError{Got: got, Want: want}
	}
	var root *x509.Certificate
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		if root == nil && subtle.ConstantTimeCompare([]byte(Fingerprint(c)), []byte(want)) == 1 {
			root = c
			continue
		}
		intermediates.AddCert(c)
	}
	if root == nil {
		return nil, &FingerprintMismatchError{Got: Fingerprint(chain[len(chain)-1]), Want: want}
	}
	if err := checkRoot(root); err != nil {
		return nil, fmt.Errorf("tlsca: pinned certificate %s: %w", want, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		DNSName:       name,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("tlsca: server certificate does not verify against the pinned root: %w", err)
	}
	return root, nil
}

// normalizeFingerprint accepts the hex SHA-256 in either case, with or
// without colons (as openssl prints it), and returns it lowercase.
func normalizeFingerprint(s string) (string, error) {
	fp := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if b, err := hex.DecodeString(fp); err != nil || len(b) != 32 {
		return "", fmt.Errorf("tlsca: pinned fingerprint %q: %w (want 64 hex digits, as sshward-ca init prints)", s, ErrBadFingerprint)
	}
	return fp, nil
}

// ClientConfigFromPEM is the client config after bootstrap: standard TLS
// verification against the saved root (root.pem), TLS 1.2 and up.
func ClientConfigFromPEM(rootPEM []byte) (*tls.Config, error) {
	certs, err := parseCertsPEM(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsca: client config: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		if err := checkRoot(c); err != nil {
			return nil, fmt.Errorf("tlsca: client config: %s: %w", Fingerprint(c), err)
		}
		pool.AddCert(c)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}
