//go:build !pkcs11

package main_test

// binTags: the default build (softkms only, no cgo needed).
const binTags = ""
