package recorder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// shipBlob sends the side blob (blob.go) of st's recording from the offset
// the server holds up to the file's current size, at most maxChunks
// chunks. It runs before the cast's chunks of the same turn: the spool
// writes blob bytes before the markers that reference them, so the server
// never holds a reference to bytes it lacks for long. done means the
// server holds the whole file as it is now.
func (s *Shipper) shipBlob(ctx context.Context, st *shipState, maxChunks int) (done bool, err error) {
	f, err := os.Open(s.cfg.Spool.blobPath(st.id))
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil // a text session: no blob
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	corrupt := 0
	for sent := 0; sent < maxChunks; {
		fi, err := f.Stat()
		if err != nil {
			return false, err
		}
		s.mu.Lock()
		offset := st.blobOffset
		st.blobSize = fi.Size()
		s.mu.Unlock()
		if offset >= fi.Size() {
			return true, nil
		}
		chunk := make([]byte, min(int64(s.cfg.ChunkBytes), fi.Size()-offset))
		if _, err := f.ReadAt(chunk, offset); err != nil {
			return false, fmt.Errorf("recorder: read blob at %d: %w", offset, err)
		}
		stored, again, err := s.sendCounted(ctx, st, IngestBlob, offset, chunk, &corrupt)
		if err != nil {
			return false, err
		}
		if again {
			continue
		}
		sent++
		s.mu.Lock()
		st.blobOffset = stored
		s.mu.Unlock()
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return st.blobOffset >= fi.Size(), nil
}

// checkBlobForFinish is finish's check of the side blob: the digest is
// taken from the file, which is what was shipped; if it changed after the
// recording closed, the metadata says so rather than the upload failing for
// ever.
func (s *Shipper) checkBlobForFinish(m *Metadata) error {
	if m.Blob == nil {
		return nil
	}
	path := s.cfg.Spool.blobPath(m.SessionID)
	sum, size, err := Digest(path)
	if errors.Is(err, fs.ErrNotExist) {
		sum, size, err = emptySHA256, 0, nil
	}
	if err != nil {
		return err
	}
	if sum != m.Blob.SHA256 || size != m.Blob.Bytes {
		b := *m.Blob
		b.Bytes, b.SHA256 = size, sum
		m.Blob = &b
		m.Complete = false
		m.Incomplete = joinReason(m.Incomplete, "spool copy of the blob changed after the recording closed")
	}
	return nil
}

// emptySHA256 is the sha256 of no bytes.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
