package ca

import (
	"bytes"
	"crypto/rsa"
	"encoding/binary"
	"strings"

	"golang.org/x/crypto/ssh"
)

func authorizedKey(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func joinComma(s []string) string { return strings.Join(s, ",") }

func beUint32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

func trimSpace(b []byte) []byte { return bytes.TrimSpace(b) }

func rsaBits(pub ssh.PublicKey) int {
	cpk, ok := pub.(ssh.CryptoPublicKey)
	if !ok {
		return 0
	}
	rk, ok := cpk.CryptoPublicKey().(*rsa.PublicKey)
	if !ok {
		return 0
	}
	return rk.N.BitLen()
}

// trimPkg drops a leading "pkg: " from an error so the sentence reads well
// in front of a user.
func trimPkg(err error) string {
	s := err.Error()
	if i := strings.Index(s, ": "); i > 0 && !strings.ContainsAny(s[:i], " \"") {
		return s[i+2:]
	}
	return s
}
