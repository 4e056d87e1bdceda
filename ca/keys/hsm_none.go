//go:build !pkcs11 || !cgo

package keys

import (
	"context"
	"fmt"
)

// Without the pkcs11 build tag (or without cgo) there is no PKCS#11
// driver: the default build links no C code.

func openHSM(context.Context, string) (*Key, error) {
	return nil, fmt.Errorf("kms scheme %q: %w (build with -tags pkcs11 and cgo: make build-pkcs11)", PKCS11Scheme, ErrUnsupportedKMS)
}

func createHSM(ctx context.Context, keyURI string) (*Key, error) { return openHSM(ctx, keyURI) }

func deleteHSM(ctx context.Context, keyURI string) error {
	_, err := openHSM(ctx, keyURI)
	return err
}
