// Package keys holds the CA's signing keys behind go.step.sm/crypto.
//
// A key lives in a KMS named by a URI. The default and only built-in driver is
// softkms: an encrypted PKCS#8 PEM file (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC,
// written with pemutil) with mode 0600 beside an authorized_keys-style .pub
// file. A key in a PKCS#11 token (pkcs11: URIs, hsm.go, token.go) needs a
// build with the pkcs11 tag; other drivers (YubiKey, cloud KMS) plug in by
// URI scheme in Open; until they do, their URIs fail with ErrUnsupportedKMS.
//
// Happy path at `sshward-ca init`:
//
//	pass, err := keys.ReadPassphrase(os.Getenv("SSHWARD_CA_PASSPHRASE"), passphraseFile)
//	k, err := keys.Create(ctx, keys.CreateRequest{Dir: dir, Name: "user-ca-staging", Passphrase: pass})
//	// dir/user-ca-staging.key (encrypted, 0600) and dir/user-ca-staging.pub
//
// and at `sshward-ca serve`:
//
//	k, err := keys.Open(ctx, "softkms:path=/srv/ca/user-ca-staging.key", pass)
//	signer, err := k.SSHSigner()
//	err = cert.SignCert(rand.Reader, signer)
//
// A software ed25519 key signs through the same x/crypto/ssh code path as
// ssh.NewSignerFromKey, so a softkms-backed CA signs as fast as a raw key
// (see BenchmarkSignCertSoftKMS and BenchmarkSignCertRaw).
//
// Private keys and passphrases never appear in errors; a *Key prints as its
// URI only.
package keys
