//go:build !(pkcs11 && cgo)

package keys

// pkcs11Built: this test binary has the PKCS#11 driver (build tag pkcs11).
const pkcs11Built = false
