package recorder

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// blobBuffer is the write buffer of a live blob; larger writes go straight
// to the file.
const blobBuffer = 64 << 10

// BlobPath returns the path of the side blob of a recording whose cast is
// at castPath: the same name with ".blob" for ".cast".
func BlobPath(castPath string) string {
	ext := filepath.Ext(castPath)
	return castPath[:len(castPath)-len(ext)] + ".blob"
}

func (s *Spool) blobPath(id string) string { return filepath.Join(s.cfg.Dir, id+".blob") }

// newBlobSink returns the blob file of a new recording, created (0600,
// exclusively) on its first byte: text sessions never have one.
func (s *Spool) newBlobSink(id string) *blobSink {
	path := s.blobPath(id)
	return &blobSink{open: func() (File, error) {
		return s.cfg.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	}}
}

// blobSink is the io.Writer of a recording's side blob: a buffered file,
// opened on the first write, flushed by the spool's flusher before the cast
// (so that the file holds every byte a flushed marker references).
type blobSink struct {
	open func() (File, error)

	mu     sync.Mutex // guards the fields below
	f      File       // nil until the first write
	bw     *bufio.Writer
	size   int64
	err    error // first open, write, flush, sync or close error; sticky
	closed bool
}

func (k *blobSink) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return 0, k.err
	}
	if k.closed {
		return 0, ErrClosed
	}
	if k.f == nil {
		f, err := k.open()
		if err != nil {
			k.err = fmt.Errorf("open blob: %w", err)
			return 0, k.err
		}
		k.f, k.bw = f, bufio.NewWriterSize(f, blobBuffer)
	}
	n, err := k.bw.Write(p)
	k.size += int64(n)
	if err != nil {
		k.err = err
	}
	return n, err
}

func (k *blobSink) flush() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil || k.closed || k.f == nil {
		return k.err
	}
	k.err = k.bw.Flush()
	return k.err
}

// close flushes, fsyncs and closes the file, if there is one.
func (k *blobSink) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	k.closed = true
	if k.f == nil {
		return k.err
	}
	if k.err == nil {
		k.err = k.bw.Flush()
	}
	if k.err == nil {
		k.err = k.f.Sync()
	}
	if err := k.f.Close(); k.err == nil {
		k.err = err
	}
	k.bw = nil
	return k.err
}

// Err returns the first failure.
func (k *blobSink) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// flushBlob references every blob byte written so far from the cast and
// flushes the blob file: before the cast is flushed, so that no flushed
// marker points past the end of the blob file.
func (r *Recording) flushBlob() error {
	if err := r.w.SealBlob(); err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	return r.blob.flush()
}

// blobInfoOnDisk describes the blob file at path as it is (after a failed
// write or a crash); nil when there is none. streamEnd is the end of the
// last range the cast references: past the file's end, the tier's cap cut
// the stream, whose digest is then unknown.
func blobInfoOnDisk(path string, streamEnd int64) (*BlobInfo, error) {
	sum, size, err := Digest(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	info := &BlobInfo{Bytes: size, SHA256: sum, StreamBytes: max(size, streamEnd), StreamSHA256: sum}
	if info.StreamBytes > size {
		info.Cut, info.StreamSHA256 = true, ""
	}
	return info, nil
}

// blobStreamEnd returns the end of the last blob range the cast at path
// references (0 for none), reading as far as the cast parses.
func blobStreamEnd(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	rd, err := NewReader(f)
	if err != nil {
		return 0
	}
	var end int64
	for {
		e, err := rd.Next()
		if err != nil {
			if err != io.EOF {
				return end
			}
			return end
		}
		if e.Code != CodeMarker {
			continue
		}
		if ref, ok := ParseBlobRef(e.Data); ok {
			end = ref.Offset + ref.Length
		}
	}
}
