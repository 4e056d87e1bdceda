package krl

import (
	"crypto/sha256"
	"time"

	"golang.org/x/crypto/ssh"
)

// Wire constants, PROTOCOL.krl sections 1 and 2.
const (
	magic         = 0x5353484b524c0a00 // "SSHKRL\n\0"
	formatVersion = 1

	sectionCertificates      = 1
	sectionExplicitKey       = 2
	sectionFingerprintSHA1   = 3
	sectionSignature         = 4
	sectionFingerprintSHA256 = 5
	sectionExtension         = 255

	certSerialList   = 0x20
	certSerialRange  = 0x21
	certSerialBitmap = 0x22
	certKeyID        = 0x23
	certExtension    = 0x39
)

// MaxSize is the largest KRL Marshal writes and Parse reads: OpenSSH's
// SSHBUF_SIZE_MAX (128 MiB). sshd cannot load anything larger, so a bigger
// list would silently revoke nothing.
const MaxSize = 128 << 20

// KRL describes one revocation list.
//
// Marshal accepts any order and duplicates; Parse returns the canonical form
// described on Parse.
type KRL struct {
	// Version is krl_version: it must grow whenever the list changes so that
	// consumers can tell a newer list from a replayed one. The CA sets it to
	// its revocation generation.
	Version uint64
	// GeneratedAt is encoded in whole seconds since the Unix epoch. The zero
	// Time encodes as 0, and Parse reports 0 as the zero Time.
	GeneratedAt time.Time
	// Comment is free text shown by `ssh-keygen -Q -l`; no NUL bytes.
	Comment string
	// CAs holds certificate revocations, one section per CA key. Sections
	// naming the same CA are merged, as krl.c does.
	CAs []CertSection
	// Keys are plain (non-certificate) public keys to revoke. They are
	// written as SHA256 fingerprints (KRL_SECTION_FINGERPRINT_SHA256), which
	// OpenSSH also applies to every certificate of the same key.
	Keys []ssh.PublicKey
	// KeySHA256 are revoked plain keys given by the SHA256 of their wire
	// blob (what `ssh-keygen -l` shows, before base64). Parse reports every
	// plain-key revocation here, including explicit-key sections.
	KeySHA256 [][sha256.Size]byte
}

// CertSection revokes certificates issued by one CA (PROTOCOL.krl section 2).
type CertSection struct {
	// CA is the issuing CA's public key; nil means any CA (an empty ca_key,
	// most useful with KeyIDs).
	CA ssh.PublicKey
	// Serials are revoked certificate serials. Serial 0 cannot be revoked by
	// serial (krl.c refuses it, and never matches serial-0 certificates);
	// revoke those by key ID.
	Serials []uint64
	// Ranges are revoked inclusive serial ranges.
	Ranges []SerialRange
	// KeyIDs are revoked certificate key IDs, compared byte for byte.
	KeyIDs []string
}

// SerialRange is an inclusive range of certificate serials, First <= Last.
type SerialRange struct {
	First, Last uint64
}
