package recorder

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrBlobCut is returned by ExactOutputBytes for a recording whose tier
// kept only the first bytes of its binary output (bulk_output keep_mib):
// the rest exists only as Metadata.Blob's StreamBytes and StreamSHA256.
var ErrBlobCut = errors.New("recorder: the tier's bulk_output cap kept only part of the binary output")

// ErrBlobShort is returned by ExactOutputBytes when the blob holds fewer
// bytes than the cast references: a truncated or missing blob.
var ErrBlobShort = errors.New("recorder: the side blob is shorter than the cast references")

// ExactOutputBytes writes to w the output the session sent, byte for
// byte: the text of the cast's output events (with the CR the recorder
// added before each LF of a session without a terminal removed, as
// ExactOutput does) and, where the cast references the side blob (blob.go),
// that range of blob, whose preview event is skipped. blob may be nil for a
// recording without one (m.Blob nil). Bytes the blob holds past the last
// reference (a crash cut the cast's last lines) come last. It returns the
// bytes written. Stdout and stderr of a session are one stream in a
// recording, interleaved as the agent read them.
//
// Secrets the recorder redacted stay redacted: their bytes were never
// recorded. A recording made before side blobs holds U+FFFD where the
// session sent invalid UTF-8.
func ExactOutputBytes(m Metadata, cast io.Reader, blob io.ReaderAt, w io.Writer) (int64, error) {
	rd, err := NewReader(cast)
	if err != nil {
		return 0, err
	}
	x := exactWriter{w: w, crlf: m.OutputNewlines == NewlinesCRLF}
	var streamEnd int64 // end of the last referenced range
	var fileEnd int64   // end of its bytes in the blob file
	skip := -1          // byte length of the preview event that must come next
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return x.n, err
		}
		if skip >= 0 {
			if e.Code != CodeOutput || len(e.Data) != skip {
				return x.n, fmt.Errorf("recorder: exact output: the event after a blob reference is not its preview: %w", ErrMalformed)
			}
			skip = -1
			continue
		}
		switch e.Code {
		case CodeOutput:
			if err := x.text(e.Data); err != nil {
				return x.n, err
			}
		case CodeMarker:
			ref, ok := ParseBlobRef(e.Data)
			if !ok {
				continue
			}
			if ref.Offset != streamEnd {
				return x.n, fmt.Errorf("recorder: exact output: blob reference at %d, want %d: %w", ref.Offset, streamEnd, ErrMalformed)
			}
			if err := x.endText(); err != nil {
				return x.n, err
			}
			if ref.Kept < ref.Length {
				return x.n, fmt.Errorf("%w: %d bytes from blob offset %d were not kept", ErrBlobCut, ref.Length-ref.Kept, ref.Offset+ref.Kept)
			}
			if err := x.blob(blob, ref.Offset, ref.Kept); err != nil {
				return x.n, err
			}
			streamEnd, fileEnd = ref.Offset+ref.Length, ref.Offset+ref.Kept
			skip = ref.Preview
		}
	}
	if skip >= 0 {
		return x.n, fmt.Errorf("recorder: exact output: the cast ends after a blob reference without its preview: %w", ErrMalformed)
	}
	if err := x.endText(); err != nil {
		return x.n, err
	}
	if m.Blob != nil && !m.Blob.Cut && m.Blob.Bytes > fileEnd && streamEnd == fileEnd {
		// The cast lost its last lines in a crash; the blob did not.
		if err := x.blob(blob, fileEnd, m.Blob.Bytes-fileEnd); err != nil {
			return x.n, err
		}
	}
	return x.n, nil
}

// exactWriter writes exact output: text runs with the added CRs removed,
// blob ranges as they are.
type exactWriter struct {
	w    io.Writer
	crlf bool
	n    int64
	buf  []byte // text of the current run not yet written
}

// text adds output event data to the current text run, writing all of it
// but a last CR, whose LF may come with the next event.
func (x *exactWriter) text(data string) error {
	x.buf = append(x.buf, data...)
	if len(x.buf) < 64<<10 {
		return nil
	}
	keep := 0
	if x.crlf && x.buf[len(x.buf)-1] == '\r' {
		keep = 1
	}
	if err := x.write(x.buf[:len(x.buf)-keep]); err != nil {
		return err
	}
	x.buf = append(x.buf[:0], x.buf[len(x.buf)-keep:]...)
	return nil
}

// endText writes the rest of the text run: a blob range or the end follows.
func (x *exactWriter) endText() error {
	err := x.write(x.buf)
	x.buf = x.buf[:0]
	return err
}

func (x *exactWriter) write(b []byte) error {
	if x.crlf {
		b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	}
	n, err := x.w.Write(b)
	x.n += int64(n)
	return err
}

func (x *exactWriter) blob(blob io.ReaderAt, off, n int64) error {
	if n == 0 {
		return nil
	}
	if blob == nil {
		return fmt.Errorf("%w: the cast references %d bytes at offset %d and there is no blob", ErrBlobShort, n, off)
	}
	c, err := io.Copy(x.w, io.NewSectionReader(blob, off, n))
	x.n += c
	if err != nil {
		return fmt.Errorf("recorder: exact output: copy blob: %w", err)
	}
	if c < n {
		return fmt.Errorf("%w: %d bytes at offset %d, the blob ends at %d", ErrBlobShort, n, off, off+c)
	}
	return nil
}
