// Package atrest is the format of recordings encrypted at rest: an
// append-only file of frames, each an age stream (X25519 recipients) of one
// chunk of the plaintext. A chunk is encrypted once, when it is appended, to
// the recipients configured then, and never rewritten: adding a recipient
// (rotation) changes what new frames are encrypted to, never old bytes.
//
// Layout:
//
//	Magic                      "sshward-atrest/1\n"
//	frame*                     uint32 BE ciphertext length ‖ uint32 BE plaintext length ‖ age stream
//
// A frame whose header or stream runs past the end of the file (a write cut
// by a crash) is not part of the file: Scan stops before it and the writer
// cuts it off. Plaintext offsets are what the rest of sshward speaks
// (append offsets, digests, range reads); File maps them to frames.
package atrest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"

	"filippo.io/age"
)

// Magic starts every encrypted file.
const Magic = "sshward-atrest/1\n"

const frameHeader = 8

// MaxFrame bounds one frame's plaintext and ciphertext (a corrupt header
// must not make a reader allocate gigabytes).
const MaxFrame = 64 << 20

// ErrNoIdentity means no configured identity opens a frame: the recording
// was encrypted to recipients whose keys this server does not hold.
var ErrNoIdentity = errors.New("atrest: no configured identity decrypts this recording (was it encrypted to a recipient whose identity is not in recordings.encryption?)")

// Seal returns data as one frame (header and age stream) to recipients.
func Seal(data []byte, recipients []age.Recipient) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, errors.New("atrest: no recipients")
	}
	if len(data) > MaxFrame {
		return nil, fmt.Errorf("atrest: chunk of %d bytes is larger than a frame (%d)", len(data), MaxFrame)
	}
	var buf bytes.Buffer
	buf.Grow(frameHeader + len(data) + 200*len(recipients) + 64)
	buf.Write(make([]byte, frameHeader))
	w, err := age.Encrypt(&buf, recipients...)
	if err != nil {
		return nil, fmt.Errorf("atrest: encrypt: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return nil, fmt.Errorf("atrest: encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("atrest: encrypt: %w", err)
	}
	out := buf.Bytes()
	binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-frameHeader))
	binary.BigEndian.PutUint32(out[4:8], uint32(len(data)))
	return out, nil
}

// Open decrypts one frame's age stream.
func Open(stream []byte, plainLen int, identities []age.Identity) ([]byte, error) {
	r, err := age.Decrypt(bytes.NewReader(stream), identities...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, ErrNoIdentity
		}
		return nil, fmt.Errorf("atrest: decrypt: %w", err)
	}
	out := make([]byte, 0, plainLen)
	out, err = readAllInto(out, r)
	if err != nil {
		return nil, fmt.Errorf("atrest: decrypt: %w", err)
	}
	if len(out) != plainLen {
		return nil, fmt.Errorf("atrest: frame holds %d bytes, its header says %d", len(out), plainLen)
	}
	return out, nil
}

func readAllInto(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// IsEncrypted reports whether the file starts with Magic. An empty or
// shorter file is not.
func IsEncrypted(r io.ReaderAt) (bool, error) {
	buf := make([]byte, len(Magic))
	n, err := r.ReadAt(buf, 0)
	if n == len(Magic) {
		return string(buf) == Magic, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return false, nil
}

// Frame is where one frame lies in the file and in the plaintext.
type Frame struct {
	Disk   int64 // offset of its stream (past the header)
	Len    int   // stream length
	Plain  int64 // plaintext offset
	PLen   int   // plaintext length
	Header int64 // offset of its header
}

// Index is the frames of a file, in order.
type Index struct {
	Frames []Frame
	End    int64 // disk offset after the last whole frame (len(Magic) when none)
	Size   int64 // plaintext bytes
}

// Scan reads the frame headers from idx.End up to the file's size and adds
// the whole frames to idx (a zero Index starts at the beginning). A torn
// frame at the end is left out.
func Scan(r io.ReaderAt, size int64, idx *Index) error {
	if idx.End == 0 {
		idx.End = int64(len(Magic))
	}
	var h [frameHeader]byte
	for idx.End+frameHeader <= size {
		if _, err := r.ReadAt(h[:], idx.End); err != nil {
			return fmt.Errorf("atrest: read frame header: %w", err)
		}
		clen := int64(binary.BigEndian.Uint32(h[0:4]))
		plen := int64(binary.BigEndian.Uint32(h[4:8]))
		if clen > MaxFrame+1<<20 || plen > MaxFrame || clen == 0 {
			return fmt.Errorf("atrest: corrupt frame header at byte %d", idx.End)
		}
		if idx.End+frameHeader+clen > size {
			break // torn: cut by a crash while being written
		}
		idx.Frames = append(idx.Frames, Frame{Header: idx.End, Disk: idx.End + frameHeader, Len: int(clen), Plain: idx.Size, PLen: int(plen)})
		idx.End += frameHeader + clen
		idx.Size += plen
	}
	return nil
}

// File reads an encrypted file's plaintext: ReadAt, Read, Seek, Stat and
// Close, like the *os.File it wraps. A file that grows (a live recording)
// is scanned again when a read goes past what is known.
type File struct {
	f   *os.File
	ids []age.Identity
	idx Index
	pos int64

	cached int // index of the frame in buf, -1 for none
	buf    []byte
}

// NewFile reads f (which starts with Magic) with identities. It takes
// ownership of f.
func NewFile(f *os.File, identities []age.Identity) (*File, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	x := &File{f: f, ids: identities, cached: -1}
	if err := Scan(f, fi.Size(), &x.idx); err != nil {
		return nil, err
	}
	return x, nil
}

// Index returns the frames known so far.
func (x *File) Index() Index { return x.idx }

func (x *File) rescan() error {
	fi, err := x.f.Stat()
	if err != nil {
		return err
	}
	return Scan(x.f, fi.Size(), &x.idx)
}

// frame returns the plaintext of frame i.
func (x *File) frame(i int) ([]byte, error) {
	if x.cached == i {
		return x.buf, nil
	}
	fr := x.idx.Frames[i]
	stream := make([]byte, fr.Len)
	if _, err := x.f.ReadAt(stream, fr.Disk); err != nil {
		return nil, fmt.Errorf("atrest: read frame: %w", err)
	}
	if len(x.ids) == 0 {
		return nil, ErrNoIdentity
	}
	p, err := Open(stream, fr.PLen, x.ids)
	if err != nil {
		return nil, err
	}
	x.cached, x.buf = i, p
	return p, nil
}

// ReadAt reads plaintext at off.
func (x *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("atrest: negative offset")
	}
	if off+int64(len(p)) > x.idx.Size {
		if err := x.rescan(); err != nil {
			return 0, err
		}
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at >= x.idx.Size {
			return n, io.EOF
		}
		i := sort.Search(len(x.idx.Frames), func(i int) bool {
			fr := x.idx.Frames[i]
			return fr.Plain+int64(fr.PLen) > at
		})
		plain, err := x.frame(i)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], plain[at-x.idx.Frames[i].Plain:])
	}
	return n, nil
}

// Read reads plaintext from the current position.
func (x *File) Read(p []byte) (int, error) {
	n, err := x.ReadAt(p, x.pos)
	x.pos += int64(n)
	if n > 0 && errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

// Seek sets the plaintext position.
func (x *File) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += x.pos
	case io.SeekEnd:
		if err := x.rescan(); err != nil {
			return 0, err
		}
		offset += x.idx.Size
	default:
		return 0, errors.New("atrest: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("atrest: negative position")
	}
	x.pos = offset
	return offset, nil
}

// Stat is the underlying file's, with the plaintext size.
func (x *File) Stat() (fs.FileInfo, error) {
	fi, err := x.f.Stat()
	if err != nil {
		return nil, err
	}
	if err := Scan(x.f, fi.Size(), &x.idx); err != nil {
		return nil, err
	}
	return plainInfo{fi, x.idx.Size}, nil
}

// Close closes the underlying file.
func (x *File) Close() error { return x.f.Close() }

type plainInfo struct {
	fs.FileInfo
	size int64
}

func (p plainInfo) Size() int64 { return p.size }
