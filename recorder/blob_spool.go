package recorder

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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
// exclusively) on its first byte: text sessions never have one. It is
// flushed by the spool's flusher before the cast, so that the file holds
// every byte a flushed marker references.
func (s *Spool) newBlobSink(id string) *fileSink {
	path := s.blobPath(id)
	return &fileSink{bufSize: blobBuffer, open: func() (File, error) {
		f, err := s.cfg.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open blob: %w", err)
		}
		return f, nil
	}}
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
