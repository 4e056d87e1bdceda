package recorder

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"unicode/utf8"
)

// blobState is a Writer's side blob (SetBlob; format in blob.go). It is
// guarded by the Writer's mu.
type blobState struct {
	w        io.Writer // the blob file
	keep     int64     // stream bytes the blob file keeps; 0: all
	controls bool      // control characters start a run (no terminal)

	stream  int64     // bytes sent to the blob so far (kept or not)
	hash    hash.Hash // sha256 of the stream
	fileSum []byte    // sha256 of the stream's first keep bytes, once past them

	inRun   bool  // classification: the last output bytes went to the blob
	pending bool  // bytes since runOff are in the blob but not yet referenced
	runOff  int64 // stream offset of the unreferenced bytes
	head    [blobPreviewBytes]byte
	nhead   int

	carry  [utf8.UTFMax - 1]byte // incomplete rune at the end of the last text
	ncarry int
	joined []byte // carry + the next output, reused
}

// SetBlob makes the Writer record output that a cast cannot hold
// faithfully in the side blob bw, referenced from the cast (see blob.go):
// bytes that are not valid UTF-8 and, with controls (a session without a
// terminal), control characters other than BEL, BS, TAB, LF, VT, FF, CR
// and ESC. keep > 0 keeps only the first keep bytes of the blob stream in
// bw (the tier's bulk_output cap); the rest is counted and hashed. Call it
// before the first event.
func (w *Writer) SetBlob(bw io.Writer, keep int64, controls bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.blob = &blobState{w: bw, keep: max(keep, 0), controls: controls, hash: sha256.New()}
}

// SealBlob writes the reference marker and preview of blob bytes written
// since the last reference, so that the cast accounts for every byte in
// the blob file. The spool calls it before each flush and commit.
func (w *Writer) SealBlob() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.blob == nil || w.closed {
		return nil
	}
	if err := w.usableLocked(); err != nil {
		return err
	}
	return w.sealBlobLocked()
}

// BlobInfo returns the blob's size and digests so far (Metadata.Blob), nil
// when no byte went to a blob.
func (w *Writer) BlobInfo() *BlobInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.blob
	if b == nil || b.stream == 0 {
		return nil
	}
	stream := hex.EncodeToString(b.hash.Sum(nil))
	info := &BlobInfo{Bytes: b.stream, SHA256: stream, StreamBytes: b.stream, StreamSHA256: stream}
	if b.keep > 0 && b.stream > b.keep {
		info.Bytes, info.SHA256, info.Cut = b.keep, hex.EncodeToString(b.fileSum), true
	}
	return info
}

// outLocked records output p: through the blob when one is set, else as
// text (invalid UTF-8 becomes U+FFFD). released says p is bytes redaction
// held back from earlier writes and lets go now (at a tick or at the
// end): they continue those writes, so they are not a write of their own
// that could end a binary run (a held "g" of random output is not a
// prompt).
func (w *Writer) outLocked(p []byte, final, released bool) error {
	if w.blob == nil {
		return w.streamLocked(CodeOutput, &w.out, p, final)
	}
	return w.blobOutputLocked(p, final, released)
}

// blobOutputLocked splits p into text, recorded as output events, and
// runs of binary bytes, written to the blob. Only whole, valid UTF-8
// reaches streamLocked, so the Writer's own carry stays empty.
func (w *Writer) blobOutputLocked(p []byte, final, released bool) error {
	if err := w.usableLocked(); err != nil {
		return err
	}
	b := w.blob
	s := p
	if b.ncarry > 0 {
		b.joined = append(append(b.joined[:0], b.carry[:b.ncarry]...), p...)
		s, b.ncarry = b.joined, 0
	}
	if b.inRun && len(s) > 0 && !released && b.cleanWrite(s, final) {
		// A write of nothing but text ends a run: a prompt or the echo of
		// a key after binary output is text, however short.
		b.inRun = false
		if err := w.sealBlobLocked(); err != nil {
			return err
		}
	}
	for len(s) > 0 {
		if !b.inRun {
			n, err := w.textLocked(s, b.controls)
			if err != nil {
				return err
			}
			s = s[n:]
			if len(s) == 0 {
				break
			}
			if !final && len(s) < utf8.UTFMax && !utf8.FullRune(s) {
				b.ncarry = copy(b.carry[:], s) // the rest of the rune comes next
				break
			}
			b.inRun = true
		}
		j, ended := b.runEnd(s)
		if err := w.blobWriteLocked(s[:j]); err != nil {
			return err
		}
		s = s[j:]
		if ended {
			b.inRun = false
			if err := w.sealBlobLocked(); err != nil {
				return err
			}
		}
	}
	if cap(b.joined) > 2*maxEventData {
		b.joined = nil
	}
	if final {
		b.inRun = false
		return w.sealBlobLocked()
	}
	return nil
}

// blobWriteLocked appends p to the blob stream: to the file while the cap
// allows, to the stream digest always. A run longer than maxBlobRun is
// referenced in parts.
func (w *Writer) blobWriteLocked(p []byte) error {
	b := w.blob
	for len(p) > 0 {
		if !b.pending {
			b.pending, b.runOff, b.nhead = true, b.stream, 0
		}
		part := p[:min(int64(len(p)), maxBlobRun-(b.stream-b.runOff))]
		p = p[len(part):]
		b.nhead += copy(b.head[b.nhead:], part)
		kept := part
		if b.keep > 0 {
			kept = part[:max(0, min(int64(len(part)), b.keep-b.stream))]
		}
		if len(kept) > 0 {
			if err := writeAll(b.w, kept); err != nil {
				w.err = fmt.Errorf("recorder: write blob: %w", err)
				return w.err
			}
		}
		b.hash.Write(kept)
		if len(kept) < len(part) {
			if b.fileSum == nil {
				b.fileSum = b.hash.Sum(nil)
			}
			b.hash.Write(part[len(kept):])
		}
		b.stream += int64(len(part))
		if b.stream-b.runOff >= maxBlobRun {
			if err := w.sealBlobLocked(); err != nil {
				return err
			}
		}
	}
	return nil
}

// sealBlobLocked writes the reference to the pending blob bytes: the marker
// and, right after it, the preview as one output event (not through
// streamLocked: the preview gets no CRs added and is never split).
func (w *Writer) sealBlobLocked() error {
	b := w.blob
	if !b.pending {
		return nil
	}
	b.pending = false
	ref := BlobRef{Offset: b.runOff, Length: b.stream - b.runOff}
	ref.Kept = ref.Length
	if b.keep > 0 {
		ref.Kept = max(0, min(ref.Length, b.keep-ref.Offset))
	}
	preview := blobPreview(ref.Offset, ref.Length, ref.Kept, b.head[:b.nhead])
	ref.Preview = len(preview)
	if err := w.eventLocked(CodeMarker, ref.Label()); err != nil {
		return err
	}
	return w.eventLocked(CodeOutput, preview)
}

// textPrefix returns how many bytes at the start of s are clean text:
// whole, valid UTF-8 without the control characters that start a run.
func (b *blobState) textPrefix(s []byte) int {
	n := len(s)
	if b.controls {
		n = firstRunControl(s)
	}
	if utf8.Valid(s[:n]) {
		return n
	}
	return utf8Prefix(s[:n])
}

// cleanWrite reports whether s is all clean text, but for an incomplete
// rune at its end that a later write may complete.
func (b *blobState) cleanWrite(s []byte, final bool) bool {
	n := b.textPrefix(s)
	rest := s[n:]
	return len(rest) == 0 || !final && len(rest) < utf8.UTFMax && !utf8.FullRune(rest)
}

// runEnd returns how many bytes of s belong to the current binary run and
// whether it ends there: it ends before the first stretch of
// blobTextResume bytes of clean ASCII text (printable, or a control that
// text uses). A shorter stretch at the end of s stays in the run, and so
// does non-ASCII text within the write; a write of nothing but text ends
// a run anyway (cleanWrite).
//
// The search skips: a window of blobTextResume bytes is tested from its
// end, and the next window starts after the last byte that spoils it, so
// random bytes (one in two is not ASCII) cost a few tests per window, not
// one per byte.
func (b *blobState) runEnd(s []byte) (int, bool) {
	for i := 0; i+blobTextResume <= len(s); {
		j := i + blobTextResume - 1
		for j >= i && !b.spoils(s[j]) {
			j--
		}
		if j < i {
			return i, true
		}
		i = j + 1
	}
	return len(s), false
}

// spoils reports whether c cannot be part of the clean ASCII text that
// ends a binary run.
func (b *blobState) spoils(c byte) bool {
	return c >= utf8.RuneSelf || b.controls && runControl[c]
}

// runControl[c] says control character c starts a binary run in a session
// without a terminal: every C0 control but BEL, BS, TAB, LF, VT, FF, CR
// and ESC, which text output uses.
var runControl = func() (t [utf8.RuneSelf]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	for _, c := range []byte{'\a', '\b', '\t', '\n', '\v', '\f', '\r', 0x1b} {
		t[c] = false
	}
	return t
}()

// firstRunControl returns the index of the first runControl byte in s, or
// len(s), testing eight bytes at a time while none is a control.
func firstRunControl(s []byte) int {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64(s[i:])
		if (x-0x20*lsb)&^x&msb == 0 { // no byte below 0x20 (exact for n <= 0x80)
			continue
		}
		for j := i; j < i+8; j++ {
			if s[j] < utf8.RuneSelf && runControl[s[j]] {
				return j
			}
		}
	}
	for ; i < len(s); i++ {
		if s[i] < utf8.RuneSelf && runControl[s[i]] {
			return i
		}
	}
	return len(s)
}

// utf8Prefix returns the length of the longest prefix of s that is whole,
// valid UTF-8.
func utf8Prefix(s []byte) int {
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
