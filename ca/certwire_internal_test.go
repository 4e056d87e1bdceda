package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	mrand "math/rand/v2"
	"testing"

	"golang.org/x/crypto/ssh"
)

// seeded returns a deterministic reader: two with the same seed give the
// same nonce, so x/crypto and signCertLine must produce identical bytes.
func seeded(seed byte) *mrand.ChaCha8 { return mrand.NewChaCha8([32]byte{seed}) }

func testCerts(t *testing.T) []*ssh.Certificate {
	t.Helper()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	var keys []ssh.PublicKey
	for _, k := range []any{edPub, &ecKey.PublicKey, &rsaKey.PublicKey} {
		p, err := ssh.NewPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, p)
	}
	var out []*ssh.Certificate
	for i, k := range keys {
		out = append(out,
			&ssh.Certificate{Key: k, Serial: 1<<62 + uint64(i), CertType: ssh.UserCert, KeyId: "alice@local tier=staging req=- serial=1",
				ValidPrincipals: []string{"alice", "deploy"}, ValidAfter: 1_700_000_000, ValidBefore: 1_700_003_600,
				Permissions: ssh.Permissions{
					CriticalOptions: map[string]string{"source-address": "10.0.0.0/8,192.168.1.1", "force-command": ""},
					Extensions:      map[string]string{"permit-pty": "", "permit-agent-forwarding": "", "sshward-request@sshward": "req-123"},
				}},
			&ssh.Certificate{Key: k, Serial: 7, CertType: ssh.HostCert, KeyId: "", ValidBefore: ssh.CertTimeInfinity},
			&ssh.Certificate{Key: k, Serial: 9, CertType: ssh.UserCert, KeyId: "x", ValidPrincipals: []string{""}, Reserved: []byte("r")},
		)
	}
	return out
}

func caSigners(t *testing.T) map[string]ssh.Signer {
	t.Helper()
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	out := map[string]ssh.Signer{}
	for name, k := range map[string]any{"ed25519": edPriv, "rsa": rsaKey, "ecdsa": ecKey} {
		s, err := ssh.NewSignerFromKey(k)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = s
	}
	// An RSA CA restricted to SHA-256, as an operator may configure.
	rs, err := ssh.NewSignerWithAlgorithms(out["rsa"].(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSASHA256})
	if err != nil {
		t.Fatal(err)
	}
	out["rsa-sha256"] = rs
	return out
}

// TestSignCertLineMatchesXCrypto: the hand-written wire encoding gives the
// same bytes as x/crypto's SignCert + MarshalAuthorizedKey (deterministic
// signatures: ed25519, RSA), and for ECDSA (randomised signatures) the same
// certificate body and a signature that verifies.
func TestSignCertLineMatchesXCrypto(t *testing.T) {
	for name, ca := range caSigners(t) {
		for i, tmpl := range testCerts(t) {
			ref, mine := *tmpl, *tmpl
			if err := ref.SignCert(seeded(byte(i)), ca); err != nil {
				t.Fatal(err)
			}
			want := ssh.MarshalAuthorizedKey(&ref)
			got, err := signCertLine(seeded(byte(i)), ca, &mine)
			if err != nil {
				t.Fatalf("%s cert %d: %v", name, i, err)
			}
			if name != "ecdsa" {
				if !bytes.Equal(got, want) {
					t.Errorf("%s cert %d:\n got %s\nwant %s", name, i, got, want)
				}
				continue
			}
			pk, _, _, _, err := ssh.ParseAuthorizedKey(got)
			if err != nil {
				t.Fatalf("%s cert %d: parse: %v", name, i, err)
			}
			cert := pk.(*ssh.Certificate)
			sigless := func(c *ssh.Certificate) []byte { cc := *c; cc.Signature = nil; return cc.Marshal() }
			if !bytes.Equal(sigless(cert), sigless(&ref)) {
				t.Errorf("%s cert %d: body differs from x/crypto's", name, i)
			}
			body := sigless(cert)
			if err := ca.PublicKey().Verify(body[:len(body)-4], cert.Signature); err != nil {
				t.Errorf("%s cert %d: signature does not verify: %v", name, i, err)
			}
			if !bytes.Equal(mine.Signature.Blob, cert.Signature.Blob) {
				t.Errorf("%s cert %d: c.Signature is not the encoded signature", name, i)
			}
		}
	}
}

// A certificate cannot sign certificates (x/crypto refuses too).
func TestSignCertLineRefusesCertificateAuthority(t *testing.T) {
	ca := caSigners(t)["ed25519"]
	c := &ssh.Certificate{Key: ca.PublicKey(), Serial: 1, CertType: ssh.UserCert, ValidBefore: ssh.CertTimeInfinity}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	cs, err := ssh.NewCertSigner(c, ca)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signCertLine(rand.Reader, cs, testCerts(t)[1]); err == nil {
		t.Fatal("a certificate signed as an authority")
	}
}
