package recorder

import (
	"encoding/binary"
	"slices"
	"unicode/utf8"
)

// escapes[c] is how byte c appears inside a JSON string when it is not
// itself (RFC 8259 section 7: '"', '\\' and controls must be escaped), or ""
// when c is written as is. 0xE2 is marked so the fast path stops at it: it
// starts U+2028 and U+2029, which are escaped too.
var escapes = func() (t [256]string) {
	for c := range 0x20 {
		t[c] = `\u00` + string(hexDigits[c>>4]) + string(hexDigits[c&0xf])
	}
	t['\b'], t['\f'], t['\n'], t['\r'], t['\t'] = `\b`, `\f`, `\n`, `\r`, `\t`
	t['"'], t['\\'] = `\"`, `\\`
	t[0xE2] = "\xE2"
	return t
}()

const hexDigits = "0123456789abcdef"

// minChunk is the least input the fast path of appendEscaped takes at once.
const minChunk = 256

// appendEscaped appends s, escaped as the inside of a JSON string, to dst. It
// stops once it has appended limit bytes or more (at a rune boundary), or,
// unless final, before an incomplete rune at the end of s. It returns the
// extended dst and the number of bytes of s consumed.
//
// Invalid UTF-8 becomes U+FFFD, one per run of invalid bytes; st.invalid
// carries "the last thing written was such a U+FFFD" across calls so that the
// concatenated data of a stream equals strings.ToValidUTF8(stream, "\uFFFD")
// however the stream was split. U+2028 and U+2029 are escaped like Go's
// encoding/json does, for readers that treat them as line ends.
func appendEscaped(dst, s []byte, st *carry, final bool, limit int) ([]byte, int) {
	start := len(dst)
	i := 0
	for i < len(s) && len(dst)-start < limit {
		// Fast path: a stretch of valid UTF-8 (the usual case) is copied in
		// runs between the bytes that need escaping, without decoding runes.
		// A byte grows to at most 6 when escaped: taking a sixth of the room
		// left (but at least minChunk bytes) overshoots limit by at most
		// 6*minChunk.
		chunk := max((limit-(len(dst)-start))/6, minChunk)
		if n := validPrefix(s[i:min(len(s), i+chunk)]); n > 0 {
			dst = appendValid(dst, s[i:i+n])
			i += n
			st.invalid = false
			continue
		}
		if !final && !utf8.FullRune(s[i:]) {
			break // the rest of this rune comes with the next call
		}
		// s[i:] starts with an invalid sequence (or one cut off by the limit,
		// which the next round takes whole).
		r, size := utf8.DecodeRune(s[i:])
		if r != utf8.RuneError || size != 1 {
			dst = appendValid(dst, s[i:i+size])
			st.invalid = false
		} else if !st.invalid {
			dst = append(dst, "\uFFFD"...)
			st.invalid = true
		}
		i += size
	}
	return dst, i
}

// validPrefix returns the length of the longest prefix of s that is whole,
// valid UTF-8.
func validPrefix(s []byte) int {
	if utf8.Valid(s) {
		return len(s)
	}
	n := 0
	for n < len(s) {
		if s[n] < utf8.RuneSelf {
			n++
			continue
		}
		r, size := utf8.DecodeRune(s[n:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		n += size
	}
	return n
}

// appendValid appends valid UTF-8 s, escaped.
func appendValid(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		j := i + plainPrefix(s[i:])
		dst = append(dst, s[i:j]...)
		if j == len(s) {
			break
		}
		c := s[j]
		switch {
		case c != 0xE2:
			// A run of one byte is escaped at once: NUL bytes (/dev/zero,
			// binary files) grow sixfold, one append per byte is slow.
			k := j + 1
			for k < len(s) && s[k] == c {
				k++
			}
			dst = appendRepeated(dst, escapes[c], k-j)
			j = k
		case j+2 < len(s) && s[j+1] == 0x80 && (s[j+2] == 0xA8 || s[j+2] == 0xA9):
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[s[j+2]&0xf])
			j += 3
		default:
			dst = append(dst, c)
			j++
		}
		i = j
	}
	return dst
}

// plainPrefix returns the length of the prefix of s that is written as is
// (escapes[c] == ""), testing eight bytes at a time while none of them
// needs a look.
func plainPrefix(s []byte) int {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if mayNeedEscape(binary.LittleEndian.Uint64(s[i:])) {
			break
		}
	}
	for i < len(s) && escapes[s[i]] == "" {
		i++
	}
	return i
}

// mayNeedEscape reports whether one of the eight bytes in x is a control
// (< 0x20), '"', '\\' or 0xE2: the bytes escapes marks. It is exact: the
// "has a byte less than n" and "has a zero byte" tests of Bit Twiddling
// Hacks (S. E. Anderson), their high bits tested at once.
func mayNeedEscape(x uint64) bool {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	q, bs, e2 := x^('"'*lsb), x^('\\'*lsb), x^(0xE2*lsb)
	t := (x - 0x20*lsb) &^ x
	t |= (q - lsb) &^ q
	t |= (bs - lsb) &^ bs
	t |= (e2 - lsb) &^ e2
	return t&msb != 0
}

// appendRepeated appends n copies of esc, doubling what is written.
func appendRepeated(dst []byte, esc string, n int) []byte {
	if n == 1 {
		return append(dst, esc...)
	}
	start, size := len(dst), len(esc)*n
	dst = slices.Grow(dst, size)[:start+size]
	copy(dst[start:], esc)
	for done := len(esc); done < size; done *= 2 {
		copy(dst[start+done:], dst[start:start+done])
	}
	return dst
}

// appendText appends to dst, escaped as the inside of a JSON string, the
// longest prefix of s that is clean text: whole, valid UTF-8 without, when
// controls is set, the control characters that start a binary run
// (runControl). With crlf every LF is written as CR LF (a terminal's onlcr;
// escaped "\r\n"). It stops there, or once it appended limit bytes or more
// (at a rune boundary), and returns the extended dst and the number of
// bytes of s consumed; s[n:] then starts with a run control, an invalid
// sequence or an incomplete rune, unless the limit was reached or s ended.
//
// This is the output path of a busy session, so it makes one pass: eight
// bytes at a time while they are printable ASCII other than '"' and '\\'
// (plain8), copying runs of plain bytes at once. Its output is the same as
// that of the general path (textPrefix, addCRs, appendEscaped), which
// FuzzAppendText checks.
func appendText(dst, s []byte, crlf, controls bool, limit int) ([]byte, int) {
	start := len(dst)
	i, run := 0, 0 // s[run:i] is clean text not yet appended
	for i < len(s) {
		out := len(dst) - start + i - run
		if out >= limit {
			break
		}
		// Plain bytes append one byte each: scan at most what the limit
		// leaves.
		end := min(len(s), i+limit-out)
		for i+8 <= end && plain8(binary.LittleEndian.Uint64(s[i:])) {
			i += 8
		}
		for i < end && plainByte(s[i]) {
			i++
		}
		if i == end {
			continue
		}
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				break // invalid or incomplete: not text
			}
			if r == '\u2028' || r == '\u2029' {
				dst = append(dst, s[run:i]...)
				dst = append(dst, `\u202`...)
				dst = append(dst, hexDigits[r&0xf])
				run = i + size
			}
			i += size
			continue
		}
		if controls && runControl[c] {
			break
		}
		dst = append(dst, s[run:i]...)
		if c == '\n' && crlf {
			dst = append(dst, `\r\n`...)
		} else {
			dst = append(dst, escapes[c]...)
		}
		i++
		run = i
	}
	return append(dst, s[run:i]...), i
}

// plainByte reports whether c is written as is and needs no look: printable
// ASCII other than '"' and '\\' (DEL included, as encoding/json writes it).
func plainByte(c byte) bool {
	return c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\'
}

// plain8 reports whether the eight bytes in x are all plainByte: no high
// bit, no byte below 0x20, no '"', no '\\' (the tests of mayNeedEscape).
func plain8(x uint64) bool {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	q, bs := x^('"'*lsb), x^('\\'*lsb)
	t := x | (x-0x20*lsb)&^x | (q-lsb)&^q | (bs-lsb)&^bs
	return t&msb == 0
}
