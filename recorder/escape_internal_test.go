package recorder

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzAppendText: the one-pass escaper of the output path against the
// general path it replaces, on any bytes. For each setting (terminal or
// not, CR LF or not, an event size limit):
//   - it takes exactly the clean-text prefix the general path's
//     classification takes (textPrefix), or stops at a rune boundary at
//     the limit and takes the rest on the next calls;
//   - its output is byte for byte what addCRs and appendEscaped write;
//   - encoding/json decodes it back to the bytes taken (LF as CR LF with
//     crlf): the round trip that players rely on.
//
// Invalid UTF-8 is never taken as text here (it goes to the side blob);
// the general path's U+FFFD replacement, still used for input, is checked
// by FuzzWriterRoundTrip.
func FuzzAppendText(f *testing.F) {
	f.Add([]byte("héllo wörld ✓ 日本\n"), true, true, uint16(0))
	f.Add([]byte("a\xff\xfeb\xe6\x97"), false, false, uint16(3))
	f.Add([]byte("\x00\x1b[31m\"\\\u2028\u2029\x7f\t\r\n"), false, true, uint16(1))
	f.Add([]byte(strings.Repeat("plain text, 8 at a time ", 40)+"\x01"), true, false, uint16(17))
	f.Add([]byte("\xe2\x80\xa8\xe2\x80"), true, true, uint16(0))
	f.Fuzz(func(t *testing.T, s []byte, crlf, controls bool, limit uint16) {
		lim := int(limit)
		if lim == 0 {
			lim = 1 << 30
		}
		// The general path: classify, add CRs, escape.
		bs := &blobState{controls: controls}
		n := bs.textPrefix(s)
		w := &Writer{crlf: crlf}
		text := s[:n]
		if crlf {
			text = bytes.Clone(w.addCRs(text))
		}
		want, m := appendEscaped(nil, text, &carry{}, true, len(text)*6+utf8.UTFMax)
		if m != len(text) {
			t.Fatalf("general path took %d of %d valid bytes", m, len(text))
		}

		// The one pass, in pieces of at most lim (plus one escape).
		var got []byte
		taken := 0
		for {
			before := len(got)
			var k int
			got, k = appendText(got, s[taken:], crlf, controls, lim)
			if len(got)-before > lim+6 {
				t.Fatalf("appended %d bytes past the limit %d", len(got)-before, lim)
			}
			if !utf8.Valid(s[taken : taken+k]) {
				t.Fatalf("took invalid UTF-8 or cut a rune at %d", taken+k)
			}
			taken += k
			if k == 0 || len(got)-before < lim {
				break
			}
		}
		if taken != n {
			t.Fatalf("took %d bytes, the clean-text prefix is %d: %q", taken, n, s)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("escaped\n got %q\nwant %q", got, want)
		}
		var back string
		if err := json.Unmarshal(append(append([]byte{'"'}, got...), '"'), &back); err != nil {
			t.Fatalf("not a JSON string: %v: %q", err, got)
		}
		if exp := string(s[:n]); crlf && back != strings.ReplaceAll(exp, "\n", "\r\n") || !crlf && back != exp {
			t.Fatalf("decoded %q, want %q", back, exp)
		}
	})
}

// TestPlain8: the eight-byte test agrees with plainByte on every byte in
// every lane, and on mixes (a borrow from one lane must not hide or invent
// another lane's byte).
func TestPlain8(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	interesting := []byte{0, 0x1f, 0x20, 0x21, '"', 0x23, 0x5b, '\\', 0x5d, 0x7f, 0x80, 0xe2, 0xff}
	for range 200000 {
		var x uint64
		want := true
		for range 8 {
			c := byte(rnd.Uint32())
			if rnd.IntN(2) == 0 {
				c = interesting[rnd.IntN(len(interesting))]
			}
			want = want && plainByte(c)
			x = x<<8 | uint64(c)
		}
		if plain8(x) != want {
			t.Fatalf("plain8(%#016x) = %v, want %v", x, !want, want)
		}
	}
	for c := range 256 {
		for lane := range 8 {
			var b [8]byte
			for i := range b {
				b[i] = 'a'
			}
			b[lane] = byte(c)
			x := uint64(0)
			for i := 7; i >= 0; i-- {
				x = x<<8 | uint64(b[i])
			}
			if got, want := plain8(x), plainByte(byte(c)); got != want {
				t.Fatalf("plain8 with %#x in lane %d = %v, want %v", c, lane, got, want)
			}
		}
	}
}
