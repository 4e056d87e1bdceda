// Package krl encodes and decodes OpenSSH Key Revocation Lists: the binary
// files that sshd reads through RevokedKeys and that `ssh-keygen -Q -f FILE`
// checks keys against.
//
// The format is OpenSSH's PROTOCOL.krl
// (https://github.com/openssh/openssh-portable/blob/master/PROTOCOL.krl);
// where the text is silent this package follows OpenSSH's own reader,
// krl.c (ssh_krl_from_blob, ssh_krl_check_key). A KRL is a header (magic
// "SSHKRL\n\0", format version 1, krl_version, generated_date, flags,
// reserved, comment) followed by sections. This package writes:
//
//   - one KRL_SECTION_CERTIFICATES (1) per CA key, or with an empty ca_key
//     for "any CA", holding a KRL_SECTION_CERT_SERIAL_LIST (0x20), one
//     KRL_SECTION_CERT_SERIAL_RANGE (0x21) per run of three or more serials,
//     and a KRL_SECTION_CERT_KEY_ID (0x23);
//   - one KRL_SECTION_FINGERPRINT_SHA256 (5) for revoked plain keys.
//
// It reads those plus serial bitmaps (0x22, which `ssh-keygen -k` writes),
// explicit-key sections (2) and non-critical extensions, and refuses the rest
// (see Parse). Nothing is signed: OpenSSH >= 9.4 refuses KRL signatures, so
// KRLs travel over an authenticated channel instead.
//
// # Happy path
//
// The CA serves one KRL per tier, built from its revocation records:
//
//	k := &krl.KRL{
//		Version:     generation, // grows with every revocation
//		GeneratedAt: now(),
//		Comment:     "sshward production",
//		CAs: []krl.CertSection{{
//			CA:      productionCA, // ssh.PublicKey of the tier's user CA
//			Serials: []uint64{8815734112, 8815734113},
//			KeyIDs:  []string{"alice@local tier=production req=- serial=4711"},
//		}},
//	}
//	b, err := k.Marshal() // canonical bytes; errors wrap ErrInvalid
//
// A host hands the bytes to sshd (RevokedKeys /etc/ssh/revoked.krl) or checks
// certificates itself:
//
//	k, err := krl.Parse(b) // errors wrap ErrMalformed or ErrUnsupported
//	if k.IsRevoked(cert) {
//		// refuse the connection, end live sessions of this certificate
//	}
//
// Marshal sorts, merges and deduplicates, so the same revocations always give
// the same bytes, and Marshal(Parse(b)) is stable. Serial 0 cannot be revoked
// by serial (krl.c refuses it), only by key ID.
package krl
