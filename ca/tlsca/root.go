package tlsca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/keys"
)

const (
	rootKeyName  = "root" // DIR/root.key
	rootCertFile = "root.crt"

	// RootValidity is the lifetime of a new root.
	RootValidity = 10 * 365 * 24 * time.Hour
	// backdate covers clock skew between the CA and its clients, as the SSH
	// certificates do.
	backdate = time.Minute
)

// Root is the internal X.509 root: its certificate and signing key. It is
// safe for concurrent use.
type Root struct {
	cert *x509.Certificate
	key  crypto.Signer
	rand io.Reader // crypto/rand.Reader; a field so the invariant is visible
}

// CreateRoot makes the root: an encrypted ECDSA P-256 key at DIR/root.key
// (0600, via keys.Create) and a self-signed CA certificate valid for ten years
// from now at DIR/root.crt (0644). It refuses to replace an existing root.
func CreateRoot(ctx context.Context, dir string, passphrase []byte, name string, now time.Time) (*Root, error) {
	if name == "" {
		name = "sshward internal root"
	}
	certPath := filepath.Join(dir, rootCertFile)
	// Check the certificate before making the key, so a refusal leaves no
	// stray key behind. keys.Create checks root.key itself.
	if _, err := os.Lstat(certPath); err == nil {
		return nil, fmt.Errorf("tlsca: create root: %s: %w", certPath, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tlsca: create root: %w", err)
	}
	key, err := keys.Create(ctx, keys.CreateRequest{
		Dir: dir, Name: rootKeyName, Type: keys.ECDSAP256, Passphrase: passphrase, X509: true,
	})
	if errors.Is(err, keys.ErrExists) {
		return nil, fmt.Errorf("tlsca: create root: %w: %w", ErrExists, err)
	}
	if err != nil {
		return nil, fmt.Errorf("tlsca: create root: %w", err)
	}
	keyPath := filepath.Join(dir, rootKeyName+".key")

	serial, err := randomSerial(rand.Reader)
	if err != nil {
		_ = os.Remove(keyPath)
		return nil, fmt.Errorf("tlsca: create root: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"sshward"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Leaves only: this root never delegates to an intermediate.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key.Signer())
	if err == nil {
		err = writeNew(certPath, EncodePEM(&x509.Certificate{Raw: der}), 0o644)
	}
	if err != nil {
		// Without its certificate the key is useless and would block a retry.
		_ = os.Remove(keyPath)
		return nil, fmt.Errorf("tlsca: create root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlsca: create root: %w", err)
	}
	return &Root{cert: cert, key: key.Signer(), rand: rand.Reader}, nil
}

// LoadRoot opens the root key with the passphrase and checks that it belongs
// to DIR/root.crt.
func LoadRoot(ctx context.Context, dir string, passphrase []byte) (*Root, error) {
	cert, err := LoadRootCert(dir)
	if err != nil {
		return nil, err
	}
	key, err := keys.Open(ctx, filepath.Join(dir, rootKeyName+".key"), passphrase)
	if err != nil {
		return nil, fmt.Errorf("tlsca: load root: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("tlsca: load root: %s does not belong to %s", key.URI(), filepath.Join(dir, rootCertFile))
	}
	return &Root{cert: cert, key: key.Signer(), rand: rand.Reader}, nil
}

// LoadRootCert reads DIR/root.crt: the public part, no passphrase needed.
func LoadRootCert(dir string) (*x509.Certificate, error) {
	path := filepath.Join(dir, rootCertFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlsca: load root certificate: %w", err)
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("tlsca: load root certificate %s: %w", path, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("tlsca: load root certificate %s: want one certificate, found %d", path, len(certs))
	}
	if err := checkRoot(certs[0]); err != nil {
		return nil, fmt.Errorf("tlsca: load root certificate %s: %w", path, err)
	}
	return certs[0], nil
}

// Cert returns the root certificate.
func (r *Root) Cert() *x509.Certificate { return r.cert }

// Fingerprint returns the pin clients bootstrap with.
func (r *Root) Fingerprint() string { return Fingerprint(r.cert) }

// Fingerprint is the lowercase hex SHA-256 of the certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// EncodePEM returns the certificate as a "CERTIFICATE" PEM block.
func EncodePEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// IssueServer signs a TLS server certificate for pub. names are DNS names or
// IP addresses (both go into the SANs; the first is also the subject CN for
// humans). It is valid from now-1m until now+ttl, never past the root.
func (r *Root) IssueServer(names []string, pub crypto.PublicKey, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	tmpl, err := serverTemplate(names, ttl, now)
	if err != nil {
		return nil, fmt.Errorf("tlsca: issue server certificate: %w", err)
	}
	if !now.Before(r.cert.NotAfter) {
		return nil, fmt.Errorf("tlsca: issue server certificate: the root expired at %s: make a new one with sshward-ca init", r.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if tmpl.NotAfter.After(r.cert.NotAfter) {
		tmpl.NotAfter = r.cert.NotAfter
	}
	if tmpl.SerialNumber, err = randomSerial(r.rand); err != nil {
		return nil, fmt.Errorf("tlsca: issue server certificate: %w", err)
	}
	der, err := x509.CreateCertificate(r.rand, tmpl, r.cert, pub, r.key)
	if err != nil {
		return nil, fmt.Errorf("tlsca: issue server certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlsca: issue server certificate: %w", err)
	}
	return cert, nil
}

func serverTemplate(names []string, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	if len(names) == 0 {
		return nil, errors.New("no names")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("ttl %s is not positive", ttl)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(ttl),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if err := checkDNSName(n); err != nil {
			return nil, err
		}
		tmpl.DNSNames = append(tmpl.DNSNames, n)
	}
	return tmpl, nil
}

// checkDNSName refuses what cannot be a host name, so a typo in --listen or
// --advertise fails at start rather than at every client's handshake.
func checkDNSName(n string) error {
	if n == "" || len(n) > 253 {
		return fmt.Errorf("name %q is not a DNS name or IP address", n)
	}
	for _, label := range strings.Split(strings.TrimPrefix(n, "*."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("name %q is not a DNS name or IP address", n)
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("name %q is not a DNS name or IP address", n)
			}
		}
	}
	return nil
}

// randomSerial is a positive 128-bit serial (RFC 5280 allows 20 octets).
func randomSerial(rand io.Reader) (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(rand, b); err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	b[0] &= 0x7f
	b[0] |= 0x40 // never zero, always 16 octets
	return new(big.Int).SetBytes(b), nil
}

// checkRoot: a pinnable root is a self-signed CA.
func checkRoot(c *x509.Certificate) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return ErrNotRoot
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		return fmt.Errorf("%w: %w", ErrNotRoot, err)
	}
	return nil
}

func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// writeNew creates path exclusively and fsyncs it.
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
