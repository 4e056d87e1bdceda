//go:build pkcs11

package main_test

// binTags: with -tags pkcs11 the binaries under test have the PKCS#11 driver.
const binTags = "pkcs11"
