package recorder

import "unicode/utf8"

// safeASCII[c] is true for the ASCII bytes that a JSON string holds as they
// are (RFC 8259 section 7: everything but '"', '\\' and controls).
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

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
		c := s[i]
		if c < utf8.RuneSelf {
			st.invalid = false
			if safeASCII[c] {
				// Copy the whole run of safe ASCII at once: the hot path.
				j := i + 1
				end := min(len(s), i+limit-(len(dst)-start))
				for j < end && s[j] < utf8.RuneSelf && safeASCII[s[j]] {
					j++
				}
				dst = append(dst, s[i:j]...)
				i = j
				continue
			}
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			continue
		}
		if !final && !utf8.FullRune(s[i:]) {
			break // the rest of this rune comes with the next call
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			if !st.invalid {
				dst = append(dst, "\uFFFD"...)
				st.invalid = true
			}
		case r == '\u2028' || r == '\u2029':
			st.invalid = false
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			st.invalid = false
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst, i
}
