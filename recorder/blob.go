package recorder

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Side blobs: lossless binary output.
//
// A cast can hold only valid UTF-8, and a control byte costs six bytes of
// JSON ("\u0000"). Output that is not text (tar, cat file.gz, a database
// dump in binary form, /dev/zero) therefore goes, byte for byte, to a side
// blob: DIR/<session_id>.blob, raw bytes appended in the order the session
// sent them. The cast keeps the story: where a run of such bytes was sent,
// a marker event references its range of the blob, and one output event
// right after it shows a short printable preview, so that asciinema, the
// web player and `sshward play` still play the cast:
//
//	[1.25, "m", "sshward-blob offset=0 length=32768 kept=32768 preview=83"]
//	[1.25, "o", "[binary output: 32768 bytes, blob offset 0: 1f8b0800 00000000 …]\r\n"]
//
// offset and length are positions in the stream of bytes sent to the blob
// (kept or not); kept is how many of them the blob file holds (the tier's
// bulk_output cap, Metadata.BulkKeepBytes, keeps only the first bytes of
// the stream: the blob file holds stream bytes [0, keep)); preview is the
// byte length of the preview event's data, which readers of the exact
// output skip. References are contiguous: each starts where the one before
// ended. The blob's size and sha256, and the length and sha256 of the
// whole stream, are in Metadata.Blob, which the host signs with the rest
// of the metadata. ExactOutputBytes puts text and blob back together.
//
// Which bytes go to the blob: a run starts at a byte that is not valid
// UTF-8 or, in a session without a terminal (OutputNewlines crlf), a
// control character other than BEL, BS, TAB, LF, VT, FF, CR and ESC; it
// ends where at least blobTextResume bytes of clean text follow (within one
// write), or at a write that is all clean text (a prompt, an echoed key). Terminal sessions keep their control characters in the cast:
// players need them there.

// BlobLabelPrefix starts the label of every blob reference marker. Markers
// from anywhere else that start with it are renamed by the Writer, so that
// no other marker can be taken for a reference.
const BlobLabelPrefix = "sshward-blob "

// blobTextResume is how many bytes of clean text end a binary run: random
// bytes hold short stretches of ASCII, which stay inside the run.
const blobTextResume = 64

// maxBlobRun bounds the bytes one reference covers, so that a long
// download is cut into ranges a player can seek across.
const maxBlobRun = 4 << 20

// blobPreviewBytes is how many leading bytes of a run the preview shows.
const blobPreviewBytes = 16

// BlobInfo describes a recording's side blob (Metadata.Blob). The spool
// sets it at Close; nil means the session sent no byte to a blob.
type BlobInfo struct {
	// Bytes and SHA256 (hex) are the size and digest of the blob file.
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	// StreamBytes and StreamSHA256 are the length and digest of every byte
	// sent to the blob, also those past the tier's cap (Cut). Without a
	// cut they equal Bytes and SHA256. StreamSHA256 is empty when a crash
	// repair could not know it (bytes past the cap were never kept).
	StreamBytes  int64  `json:"stream_bytes"`
	StreamSHA256 string `json:"stream_sha256,omitempty"`
	// Cut is true when the tier's bulk_output cap kept only the first
	// Bytes of the StreamBytes.
	Cut bool `json:"cut,omitempty"`
}

// BlobRef is one reference from the cast into the blob.
type BlobRef struct {
	Offset  int64 // position in the blob stream
	Length  int64 // bytes the session sent in this run
	Kept    int64 // of them, how many the blob file holds (at Offset)
	Preview int   // byte length of the preview event that follows
}

// Label is the marker label of r.
func (r BlobRef) Label() string {
	return BlobLabelPrefix + "offset=" + strconv.FormatInt(r.Offset, 10) +
		" length=" + strconv.FormatInt(r.Length, 10) +
		" kept=" + strconv.FormatInt(r.Kept, 10) +
		" preview=" + strconv.Itoa(r.Preview)
}

// ParseBlobRef reads a marker label written by Label. ok is false for any
// other label, and for a reference that cannot be (negative numbers, kept
// more than length, a range past 2^62).
func ParseBlobRef(label string) (r BlobRef, ok bool) {
	rest, found := strings.CutPrefix(label, BlobLabelPrefix)
	if !found {
		return r, false
	}
	fields := strings.Split(rest, " ")
	if len(fields) != 4 {
		return r, false
	}
	var nums [4]int64
	for i, key := range []string{"offset", "length", "kept", "preview"} {
		v, found := strings.CutPrefix(fields[i], key+"=")
		if !found || v == "" || v[0] == '+' || v[0] == '-' || (len(v) > 1 && v[0] == '0') {
			return r, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > 1<<62 {
			return r, false
		}
		nums[i] = n
	}
	r = BlobRef{Offset: nums[0], Length: nums[1], Kept: nums[2]}
	if nums[3] > MaxLineBytes || r.Kept > r.Length || r.Length == 0 || r.Offset > 1<<62-r.Length {
		return BlobRef{}, false
	}
	r.Preview = int(nums[3])
	return r, true
}

// blobPreview is the printable stand-in shown in the cast for a run of n
// bytes at offset, of which kept are in the blob; head is its first bytes.
func blobPreview(off, n, kept int64, head []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[binary output: %d bytes, blob offset %d: ", n, off)
	h := hex.EncodeToString(head[:min(len(head), blobPreviewBytes)])
	for i := 0; i < len(h); i += 8 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(h[i:min(len(h), i+8)])
	}
	if n > int64(len(head)) {
		b.WriteString(" …")
	}
	if kept < n {
		fmt.Fprintf(&b, "; %d bytes not kept (tier bulk_output cap)", n-kept)
	}
	b.WriteString("]\r\n")
	return b.String()
}
