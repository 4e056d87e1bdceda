package krl

import (
	"bytes"
	"crypto/sha256"
	"slices"

	"golang.org/x/crypto/ssh"
)

// IsRevoked reports whether OpenSSH would refuse key under this KRL. It
// mirrors ssh_krl_check_key in krl.c: a plain key is revoked by its SHA256
// (Keys or KeySHA256); a certificate is revoked when its underlying key is,
// when its signing CA key is, or when a section for its CA, or the any-CA
// section, lists its key ID or (for a non-zero serial) its serial.
//
// It works on any KRL value, canonical or not, by linear scans; a caller
// checking many keys against a large list should index it first.
func (k *KRL) IsRevoked(key ssh.PublicKey) bool {
	if key == nil {
		return false
	}
	if k.keyRevoked(key) {
		return true
	}
	cert, ok := key.(*ssh.Certificate)
	if !ok || cert.SignatureKey == nil {
		return false
	}
	if k.keyRevoked(cert.SignatureKey) {
		return true
	}
	caBlob := cert.SignatureKey.Marshal()
	for i := range k.CAs {
		s := &k.CAs[i]
		if s.CA != nil && !bytes.Equal(s.CA.Marshal(), caBlob) {
			continue
		}
		if s.revokes(cert) {
			return true
		}
	}
	return false
}

// keyRevoked checks the plain-key revocations. For a certificate krl.c hashes
// the certificate's plain key (sshkey_fingerprint_raw serializes it with the
// certificate dropped), so revoking a key also revokes its certificates.
func (k *KRL) keyRevoked(key ssh.PublicKey) bool {
	if cert, ok := key.(*ssh.Certificate); ok {
		key = cert.Key
	}
	if key == nil {
		return false
	}
	blob := key.Marshal()
	sum := sha256.Sum256(blob)
	if slices.Contains(k.KeySHA256, sum) {
		return true
	}
	return slices.ContainsFunc(k.Keys, func(rk ssh.PublicKey) bool {
		return rk != nil && bytes.Equal(rk.Marshal(), blob)
	})
}

// revokes applies one certificate section (krl.c is_cert_revoked).
func (s *CertSection) revokes(cert *ssh.Certificate) bool {
	if slices.Contains(s.KeyIDs, cert.KeyId) {
		return true
	}
	if cert.Serial == 0 {
		// Zero is the serial of CAs that don't set one; krl.c never
		// revokes it by serial.
		return false
	}
	if slices.Contains(s.Serials, cert.Serial) {
		return true
	}
	return slices.ContainsFunc(s.Ranges, func(r SerialRange) bool {
		return r.First <= cert.Serial && cert.Serial <= r.Last
	})
}
