package krl

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"golang.org/x/crypto/ssh"
)

// maxBitmapBytes bounds a serial bitmap's mpint as krl.c does
// (sshbuf_get_bignum2_bytes_direct: SSHBUF_MAX_BIGNUM, 16384 bits).
const maxBitmapBytes = 16384 / 8

// Parse decodes a KRL. It accepts what OpenSSH's krl.c accepts, with these
// refusals (ErrUnsupported): format versions other than 1, non-zero flags,
// signature sections, SHA1 fingerprint sections, critical extensions and
// inputs above MaxSize. It is stricter than krl.c where PROTOCOL.krl says
// "must" (non-empty key-ID and hash sections, hashes in ascending order,
// minimal bitmap mpints, no NUL in strings) and where krl.c accepts data it
// never matches (certificates as CA or revoked keys).
//
// The result is canonical: one CertSection per distinct CA in order of first
// appearance, isolated serials in Serials and runs in Ranges (sorted,
// merged), KeyIDs and KeySHA256 sorted and unique, explicit-key sections
// folded into KeySHA256, Keys nil. Non-critical extensions are skipped.
//
// Parse never panics, and allocates O(len(b)): serials are kept as ranges
// and bitmaps are decoded into runs, never expanded one by one. Errors wrap
// ErrMalformed or ErrUnsupported.
func Parse(b []byte) (*KRL, error) {
	k, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("krl: parse: %w", err)
	}
	return k, nil
}

func parse(b []byte) (*KRL, error) {
	if len(b) > MaxSize {
		return nil, unsupported("%d bytes is more than OpenSSH loads (%d)", len(b), MaxSize)
	}
	r := reader{b: b}
	if m, ok := r.u64(); !ok || m != magic {
		return nil, malformed("not a KRL: bad magic")
	}
	v, ok := r.u32()
	if !ok {
		return nil, malformed("truncated header")
	}
	if v != formatVersion {
		return nil, unsupported("format version %d", v)
	}
	c := &canonical{}
	var flags uint64
	var comment []byte
	c.version, ok = r.u64()
	if ok {
		c.date, ok = r.u64()
	}
	if ok {
		flags, ok = r.u64()
	}
	if ok {
		_, ok = r.str() // reserved
	}
	if ok {
		comment, ok = r.str()
	}
	if !ok {
		return nil, malformed("truncated header")
	}
	if flags != 0 {
		return nil, unsupported("flags %#x (none are defined)", flags)
	}
	if c.date > math.MaxInt64 {
		return nil, malformed("generated date %d out of range", c.date)
	}
	if bytes.IndexByte(comment, 0) >= 0 {
		return nil, malformed("comment contains a NUL byte")
	}
	c.comment = string(comment)

	p := parser{c: c, index: make(map[string]int)}
	for n := 0; !r.empty(); n++ {
		typ, ok := r.u8()
		if !ok {
			return nil, malformed("section %d: truncated", n)
		}
		if typ == sectionSignature {
			return nil, unsupported("section %d: signature (OpenSSH >= 9.4 refuses signed KRLs)", n)
		}
		data, ok := r.str()
		if !ok {
			return nil, malformed("section %d (type %d): truncated", n, typ)
		}
		var err error
		switch typ {
		case sectionCertificates:
			err = p.certificates(data)
		case sectionExplicitKey:
			err = p.explicitKeys(data)
		case sectionFingerprintSHA1:
			err = unsupported("SHA1 fingerprints")
		case sectionFingerprintSHA256:
			err = p.sha256s(data)
		case sectionExtension:
			err = extension(data)
		default:
			err = malformed("unknown section type")
		}
		if err != nil {
			return nil, fmt.Errorf("section %d (type %d): %w", n, typ, err)
		}
	}

	for i := range c.cas {
		c.cas[i].runs = mergeRuns(c.cas[i].runs)
		c.cas[i].ids = sortedUnique(c.cas[i].ids, strings.Compare)
	}
	c.hashes = sortedUnique(c.hashes, func(a, b [sha256.Size]byte) int { return bytes.Compare(a[:], b[:]) })
	return c.toKRL(), nil
}

// parser accumulates revocations across sections; repeated sections for one
// CA merge, as in krl.c's revoked_certs_for_ca_key.
type parser struct {
	c     *canonical
	index map[string]int // CA blob ("" for any CA) → position in c.cas
}

// certificates parses one KRL_SECTION_CERTIFICATES (PROTOCOL.krl section 2).
func (p *parser) certificates(data []byte) error {
	r := reader{b: data}
	blob, ok := r.str()
	if ok {
		_, ok = r.str() // reserved
	}
	if !ok {
		return malformed("truncated CA key or reserved field")
	}
	var ca ssh.PublicKey
	if len(blob) > 0 {
		var err error
		if ca, err = ssh.ParsePublicKey(blob); err != nil {
			return malformed("CA key: %v", err)
		}
		if _, isCert := ca.(*ssh.Certificate); isCert {
			return malformed("CA key is a certificate")
		}
	}
	j, seen := p.index[string(blob)]
	if !seen {
		j = len(p.c.cas)
		p.index[string(blob)] = j
		p.c.cas = append(p.c.cas, canonicalCA{ca: ca, blob: bytes.Clone(blob)})
	}
	cc := &p.c.cas[j]

	for n := 0; !r.empty(); n++ {
		typ, ok := r.u8()
		if !ok {
			return malformed("subsection %d: truncated", n)
		}
		sub, ok := r.str()
		if !ok {
			return malformed("subsection %d (type %#x): truncated", n, typ)
		}
		var err error
		switch typ {
		case certSerialList:
			err = cc.serialList(sub)
		case certSerialRange:
			err = cc.serialRange(sub)
		case certSerialBitmap:
			err = cc.serialBitmap(sub)
		case certKeyID:
			err = cc.keyIDs(sub)
		case certExtension:
			err = extension(sub)
		default:
			err = malformed("unknown certificate subsection type")
		}
		if err != nil {
			return fmt.Errorf("subsection %d (type %#x): %w", n, typ, err)
		}
	}
	return nil
}

func (cc *canonicalCA) serialList(sub []byte) error {
	if len(sub)%8 != 0 {
		return malformed("serial list of %d bytes is not a whole number of serials", len(sub))
	}
	for i := 0; i < len(sub); i += 8 {
		n := binary.BigEndian.Uint64(sub[i:])
		if n == 0 {
			// ssh_krl_revoke_cert_by_serial refuses 0, failing the whole KRL.
			return malformed("serial 0")
		}
		cc.runs = appendRun(cc.runs, n, n)
	}
	return nil
}

func (cc *canonicalCA) serialRange(sub []byte) error {
	if len(sub) != 16 {
		return malformed("serial range of %d bytes, want 16", len(sub))
	}
	lo, hi := binary.BigEndian.Uint64(sub), binary.BigEndian.Uint64(sub[8:])
	if lo == 0 || lo > hi {
		return malformed("serial range %d-%d is empty or includes 0", lo, hi)
	}
	cc.runs = appendRun(cc.runs, lo, hi)
	return nil
}

// serialBitmap decodes uint64 serial_offset + mpint bitmap, where bit N (from
// the least significant end) revokes serial_offset+N.
func (cc *canonicalCA) serialBitmap(sub []byte) error {
	r := reader{b: sub}
	offset, ok := r.u64()
	if !ok {
		return malformed("truncated bitmap offset")
	}
	m, ok := r.str()
	if !ok || !r.empty() {
		return malformed("truncated bitmap or trailing data")
	}
	switch {
	case len(m) > 0 && m[0]&0x80 != 0:
		return malformed("negative bitmap")
	case len(m) > maxBitmapBytes+1 || len(m) == maxBitmapBytes+1 && m[0] != 0:
		return malformed("bitmap longer than %d bits", maxBitmapBytes*8)
	case len(m) > 0 && m[0] == 0 && (len(m) == 1 || m[1]&0x80 == 0):
		// RFC 4251 section 5: no unnecessary leading zero bytes.
		return malformed("bitmap mpint has a needless leading zero")
	}
	if len(m) == 0 {
		return nil
	}
	nbits := uint64(len(m))*8 - uint64(leadingZeros(m[0]))
	if offset > math.MaxUint64-(nbits-1) {
		return malformed("bitmap at offset %d wraps past 2^64", offset)
	}
	// Walk bits from the least significant end, emitting runs of set bits.
	inRun, start := false, uint64(0)
	for bit := uint64(0); bit <= nbits; bit++ {
		set := bit < nbits && m[len(m)-1-int(bit/8)]&(1<<(bit%8)) != 0
		switch {
		case set && !inRun:
			inRun, start = true, bit
		case !set && inRun:
			inRun = false
			if offset+start == 0 {
				return malformed("bitmap revokes serial 0")
			}
			cc.runs = appendRun(cc.runs, offset+start, offset+bit-1)
		}
	}
	return nil
}

func (cc *canonicalCA) keyIDs(sub []byte) error {
	r := reader{b: sub}
	if r.empty() {
		return malformed("empty key ID section")
	}
	for !r.empty() {
		id, ok := r.str()
		if !ok {
			return malformed("truncated key ID")
		}
		if bytes.IndexByte(id, 0) >= 0 {
			return malformed("key ID contains a NUL byte")
		}
		cc.ids = append(cc.ids, string(id))
	}
	return nil
}

// explicitKeys parses KRL_SECTION_EXPLICIT_KEY (PROTOCOL.krl section 3) and
// records each key by its SHA256, which matches exactly the keys krl.c's
// blob comparison matches.
func (p *parser) explicitKeys(data []byte) error {
	r := reader{b: data}
	if r.empty() {
		return malformed("empty explicit key section")
	}
	for !r.empty() {
		blob, ok := r.str()
		if !ok {
			return malformed("truncated key")
		}
		key, err := ssh.ParsePublicKey(blob)
		if err != nil {
			return malformed("key: %v", err)
		}
		if _, isCert := key.(*ssh.Certificate); isCert {
			return malformed("explicit key is a certificate")
		}
		p.c.hashes = append(p.c.hashes, sha256.Sum256(blob))
	}
	return nil
}

// sha256s parses KRL_SECTION_FINGERPRINT_SHA256 (PROTOCOL.krl section 4).
func (p *parser) sha256s(data []byte) error {
	r := reader{b: data}
	if r.empty() {
		return malformed("empty fingerprint section")
	}
	var prev []byte
	for !r.empty() {
		h, ok := r.str()
		if !ok {
			return malformed("truncated fingerprint")
		}
		if len(h) != sha256.Size {
			return malformed("fingerprint of %d bytes, want %d", len(h), sha256.Size)
		}
		if prev != nil && bytes.Compare(prev, h) >= 0 {
			return malformed("fingerprints not in strictly ascending order")
		}
		prev = h
		p.c.hashes = append(p.c.hashes, [sha256.Size]byte(h))
	}
	return nil
}

// extension parses an extension section or subsection (PROTOCOL.krl sections
// 2.5 and 5): string name, boolean critical, string contents. None are
// understood, so a critical one must fail the KRL.
func extension(data []byte) error {
	r := reader{b: data}
	name, ok := r.str()
	var critical byte
	if ok {
		critical, ok = r.u8()
	}
	if ok {
		_, ok = r.str()
	}
	if !ok || !r.empty() {
		return malformed("truncated extension or trailing data")
	}
	if critical != 0 {
		return unsupported("critical extension %q", name)
	}
	return nil
}

// appendRun appends [lo, hi]; runs are merged once a KRL is fully read.
func appendRun(runs []SerialRange, lo, hi uint64) []SerialRange {
	// Collapse the common case of ascending adjacent serials on the fly so a
	// long serial list does not hold one entry per serial until the merge.
	if n := len(runs); n > 0 && runs[n-1].Last != math.MaxUint64 && runs[n-1].Last+1 == lo {
		runs[n-1].Last = hi
		return runs
	}
	return append(runs, SerialRange{lo, hi})
}

func leadingZeros(b byte) int {
	n := 0
	for mask := byte(0x80); mask != 0 && b&mask == 0; mask >>= 1 {
		n++
	}
	return n
}

// reader consumes SSH wire types (RFC 4251 section 5). Every method reports
// false instead of reading past the end, and returns sub-slices of the input
// rather than copies.
type reader struct{ b []byte }

func (r *reader) empty() bool { return len(r.b) == 0 }

func (r *reader) u8() (byte, bool) {
	if len(r.b) < 1 {
		return 0, false
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v, true
}

func (r *reader) u32() (uint32, bool) {
	if len(r.b) < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v, true
}

func (r *reader) u64() (uint64, bool) {
	if len(r.b) < 8 {
		return 0, false
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v, true
}

func (r *reader) str() ([]byte, bool) {
	n, ok := r.u32()
	if !ok || uint64(n) > uint64(len(r.b)) {
		return nil, false
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s, true
}

// malformed and unsupported build the innermost error; callers add the
// section context and Parse the "krl: parse:" prefix.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrMalformed)
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrUnsupported)
}
