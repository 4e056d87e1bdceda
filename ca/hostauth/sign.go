package hostauth

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/crypto/ssh"
)

// nonceBytes of randomness: 128 bits, 22 base64url characters.
const nonceBytes = 16

// Sign sets req's Authorization header to an SSHWard-Host header signed by
// signer (the host key) for cert (its host certificate) over the method,
// path?query, now, a fresh nonce and sha256(body). body must be exactly what
// req will send. rand nil means crypto/rand.
func Sign(req *http.Request, body []byte, cert *ssh.Certificate, signer ssh.Signer, now time.Time, rand io.Reader) error {
	if cert == nil || signer == nil || req == nil || req.URL == nil {
		return errors.New("hostauth: sign: nil request, certificate or signer")
	}
	if !bytes.Equal(cert.Key.Marshal(), signer.PublicKey().Marshal()) {
		return errors.New("hostauth: sign: the signer's key is not the certificate's key")
	}
	if rand == nil {
		rand = defaultRand
	}
	raw := make([]byte, nonceBytes)
	if _, err := io.ReadFull(rand, raw); err != nil {
		return fmt.Errorf("hostauth: sign: nonce: %w", err)
	}
	h := header{
		cert:  cert.Marshal(),
		ts:    now.Unix(),
		nonce: base64.RawURLEncoding.EncodeToString(raw),
	}
	sig, err := signData(signer, rand, signedData(req.Method, req.URL.RequestURI(), h.ts, h.nonce, body))
	if err != nil {
		return fmt.Errorf("hostauth: sign: %w", err)
	}
	h.sig = ssh.Marshal(sig)
	req.Header.Set("Authorization", h.String())
	return nil
}

var defaultRand = rand.Reader

// signData signs with a SHA-2 algorithm: an RSA key's default "ssh-rsa" is
// SHA-1, which Verify refuses.
func signData(signer ssh.Signer, rand io.Reader, data []byte) (*ssh.Signature, error) {
	if signer.PublicKey().Type() != ssh.KeyAlgoRSA {
		return signer.Sign(rand, data)
	}
	as, ok := signer.(ssh.AlgorithmSigner)
	if !ok {
		return nil, errors.New("rsa host key cannot sign with rsa-sha2-512")
	}
	return as.SignWithAlgorithm(rand, data, ssh.KeyAlgoRSASHA512)
}
