//go:build pkcs11 && cgo

package keys

import (
	"context"
	"crypto"
	"fmt"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/pkcs11"
)

// openHSM loads the key the pkcs11 URI names. The module session stays open
// while the Key lives (Key.Close ends it).
func openHSM(ctx context.Context, keyURI string) (*Key, error) {
	km, err := pkcs11.New(ctx, apiv1.Options{Type: apiv1.PKCS11, URI: keyURI})
	if err != nil {
		return nil, fmt.Errorf("open module: %w", err)
	}
	signer, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: keyURI})
	if err != nil {
		km.Close()
		return nil, fmt.Errorf("find key: %w", err)
	}
	return hsmKey(keyURI, signer, km)
}

// createHSM generates an ECDSA P-256 key pair in the token (Ed25519 is not
// in step's PKCS#11 driver). crypto11 marks the private key CKA_SENSITIVE
// and not CKA_EXTRACTABLE unless asked otherwise, which we never do.
func createHSM(ctx context.Context, keyURI string) (*Key, error) {
	km, err := pkcs11.New(ctx, apiv1.Options{Type: apiv1.PKCS11, URI: keyURI})
	if err != nil {
		return nil, fmt.Errorf("open module: %w", err)
	}
	resp, err := km.CreateKey(&apiv1.CreateKeyRequest{Name: keyURI, SignatureAlgorithm: apiv1.ECDSAWithSHA256, Extractable: false})
	if err != nil {
		km.Close()
		return nil, fmt.Errorf("generate key: %w", err)
	}
	signer, err := km.CreateSigner(&resp.CreateSignerRequest)
	if err != nil {
		km.Close()
		return nil, fmt.Errorf("find new key: %w", err)
	}
	return hsmKey(keyURI, signer, km)
}

func hsmKey(keyURI string, signer crypto.Signer, km *pkcs11.PKCS11) (*Key, error) {
	k, err := newKey(redactURI(keyURI), signer)
	if err != nil {
		km.Close()
		return nil, err
	}
	k.closer = km
	return k, nil
}

// deleteHSM destroys the key pair the URI names in its token (a retired
// CA key); a key that is not there is no error.
func deleteHSM(ctx context.Context, keyURI string) error {
	km, err := pkcs11.New(ctx, apiv1.Options{Type: apiv1.PKCS11, URI: keyURI})
	if err != nil {
		return fmt.Errorf("open module: %w", err)
	}
	defer km.Close()
	return km.DeleteKey(keyURI)
}
