package ca

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"golang.org/x/crypto/ssh"
)

// signCertLine signs c with authority exactly as ssh.Certificate.SignCert
// does (a 32-byte nonce from rand, the same signature algorithm choice) and
// returns the certificate in authorized_keys form ("TYPE BASE64\n"), what
// ssh.MarshalAuthorizedKey(c) returns. It sets c.Nonce, c.SignatureKey and
// c.Signature like SignCert.
//
// It exists for issuance throughput: x/crypto marshals the certificate by
// reflection once to sign it and again to encode it; this writes the wire
// form once, by hand, into one buffer (PROTOCOL.certkeys). Tests check it
// byte for byte against SignCert + MarshalAuthorizedKey.
func signCertLine(rand io.Reader, authority ssh.Signer, c *ssh.Certificate) ([]byte, error) {
	pub := authority.PublicKey()
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return nil, fmt.Errorf("ssh: certificates cannot be used as authority (public key type %q)", pub.Type())
	}
	c.Nonce = make([]byte, 32)
	if _, err := io.ReadFull(rand, c.Nonce); err != nil {
		return nil, err
	}
	c.SignatureKey = pub
	certType := c.Type()
	keyBytes := c.Key.Marshal()
	keyRest, ok := skipString(keyBytes)
	if !ok {
		return nil, errors.New("ca: malformed public key encoding")
	}
	sigKey := pub.Marshal()

	n := 4 + len(certType) + 4 + 32 + len(keyRest) + 8 + 4 + 4 + len(c.KeyId) + 4 + 8 + 8 + 4 + 4 + 4 + len(c.Reserved) + 4 + len(sigKey)
	for _, p := range c.ValidPrincipals {
		n += 4 + len(p)
	}
	for k, v := range c.CriticalOptions {
		n += 12 + len(k) + len(v)
	}
	for k, v := range c.Extensions {
		n += 12 + len(k) + len(v)
	}
	// The signature: string(string(format) ‖ string(blob)); ed25519 is
	// 4+11+4+64, RSA 4096 up to 4+12+4+512.
	buf := make([]byte, 0, n+4+4+12+4+512)

	buf = appendString(buf, certType)
	buf = appendString(buf, c.Nonce)
	buf = append(buf, keyRest...)
	buf = binary.BigEndian.AppendUint64(buf, c.Serial)
	buf = binary.BigEndian.AppendUint32(buf, c.CertType)
	buf = appendString(buf, c.KeyId)
	buf = appendLength(buf, func(b []byte) []byte {
		for _, p := range c.ValidPrincipals {
			b = appendString(b, p)
		}
		return b
	})
	buf = binary.BigEndian.AppendUint64(buf, c.ValidAfter)
	buf = binary.BigEndian.AppendUint64(buf, c.ValidBefore)
	buf = appendTuples(buf, c.CriticalOptions)
	buf = appendTuples(buf, c.Extensions)
	buf = appendString(buf, c.Reserved)
	buf = appendString(buf, sigKey)

	sig, err := signLikeSignCert(rand, authority, buf)
	if err != nil {
		return nil, err
	}
	c.Signature = sig
	buf = appendLength(buf, func(b []byte) []byte {
		b = appendString(b, sig.Format)
		b = appendString(b, sig.Blob)
		return append(b, sig.Rest...)
	})

	enc := base64.StdEncoding
	line := make([]byte, 0, len(certType)+1+enc.EncodedLen(len(buf))+1)
	line = append(line, certType...)
	line = append(line, ' ')
	line = enc.AppendEncode(line, buf)
	return append(line, '\n'), nil
}

// signLikeSignCert picks the algorithm as ssh.Certificate.SignCert does.
func signLikeSignCert(rand io.Reader, authority ssh.Signer, data []byte) (*ssh.Signature, error) {
	if v, ok := authority.(ssh.MultiAlgorithmSigner); ok {
		if len(v.Algorithms()) == 0 {
			return nil, errors.New("the provided authority has no signature algorithm")
		}
		return v.SignWithAlgorithm(rand, data, v.Algorithms()[0])
	}
	if v, ok := authority.(ssh.AlgorithmSigner); ok && v.PublicKey().Type() == ssh.KeyAlgoRSA {
		return v.SignWithAlgorithm(rand, data, ssh.KeyAlgoRSASHA512)
	}
	return authority.Sign(rand, data)
}

func appendString[S ~string | ~[]byte](b []byte, s S) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendLength appends a length-prefixed string whose body fill writes.
func appendLength(b []byte, fill func([]byte) []byte) []byte {
	at := len(b)
	b = append(b, 0, 0, 0, 0)
	b = fill(b)
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

// appendTuples writes critical options or extensions: names in order, a
// non-empty value wrapped in a second string (PROTOCOL.certkeys).
func appendTuples(b []byte, m map[string]string) []byte {
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return appendLength(b, func(b []byte) []byte {
		for _, k := range keys {
			b = appendString(b, k)
			if v := m[k]; v != "" {
				b = binary.BigEndian.AppendUint32(b, uint32(4+len(v)))
				b = appendString(b, v)
			} else {
				b = appendString(b, "")
			}
		}
		return b
	})
}

// skipString returns what follows the first length-prefixed string of b.
func skipString(b []byte) ([]byte, bool) {
	if len(b) < 4 {
		return nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, false
	}
	return b[4+n:], true
}
