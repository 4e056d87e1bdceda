package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sshward/sshward/recorder"
)

// Side blobs (recorder/blob.go): the raw binary output of a recording,
// blobs/<id>.blob beside its cast, shipped in chunks at byte offsets like
// the cast (but without lines) and checked at finish against the size and
// sha256 in the signed metadata (Metadata.Blob). The fields bsize and bhash
// of the recording's blob state hold its committed size and running digest
// while live.

func (s *Store) sideBlobPath(id string) string { return filepath.Join(s.blobDir, id+".blob") }

// loadSideBlob reads the committed size and digest of a live recording's
// side blob after a restart. Every byte on disk came from a chunk whose
// digest was checked before it was written, so all of them count; finish
// compares the whole with the signed digest anyway.
func (s *Store) loadSideBlob(b *blob) error {
	b.bsize, b.bhash, b.bf = 0, sha256.New(), s.newAppendFile()
	f, err := os.OpenFile(s.sideBlobPath(b.id), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: open blob %s: %w", b.id, err)
	}
	defer f.Close()
	n, h, bf, err := s.recoverFile(f, false)
	if err != nil {
		return fmt.Errorf("store: read blob %s: %w", b.id, err)
	}
	b.bsize, b.bhash, b.bf = n, h, bf
	return nil
}

// resetSideBlobLocked empties the side blob (a new start, or stored bytes
// discarded).
func (s *Store) resetSideBlobLocked(b *blob) error {
	if err := os.Remove(s.sideBlobPath(b.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: reset blob %s: %w", b.id, err)
	}
	b.bsize, b.bhash, b.bf = 0, sha256.New(), s.newAppendFile()
	return nil
}

// sideBlobMatchesLocked reports whether the stored side blob is the one the
// finishing metadata signs: none when m.Blob is nil.
func sideBlobMatchesLocked(b *blob, m recorder.Metadata) bool {
	if m.Blob == nil {
		return b.bsize == 0
	}
	return b.bhash != nil && b.bsize == m.Blob.Bytes && hex.EncodeToString(b.bhash.Sum(nil)) == m.Blob.SHA256
}

// AppendBlob writes a chunk of a live recording's side blob at offset and
// returns the stored size once it is on disk (fsynced). As Append: offset
// must be the stored size, else an *OffsetError says where to resume (also
// for a finished recording).
func (s *Store) AppendBlob(ctx context.Context, id, owner string, offset int64, data []byte) (int64, error) {
	if len(data) == 0 {
		return 0, ErrChunk
	}
	b, err := s.lockBlob(id)
	if err != nil {
		return 0, err
	}
	defer b.mu.Unlock()
	switch {
	case !b.exists:
		return 0, fmt.Errorf("store: append to blob %s: %w", id, ErrNotFound)
	case b.owner != owner:
		return 0, fmt.Errorf("store: append to blob %s: %w", id, ErrOwner)
	case b.finished || offset != b.bsize || b.bhash == nil:
		return 0, &OffsetError{Stored: b.bsize}
	}
	f, err := os.OpenFile(s.sideBlobPath(id), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("store: append to blob %s: %w", id, err)
	}
	bf, err := s.writeChunk(f, b.bf, data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && b.bsize == 0 {
		err = s.syncDir() // the new file's entry, before the first acknowledgement
	}
	if err != nil {
		return 0, fmt.Errorf("store: append to blob %s: %w", id, err)
	}
	b.bf = bf
	b.bhash.Write(data)
	b.bsize += int64(len(data))
	return b.bsize, nil
}

// BlobStored returns how many bytes of a recording's side blob are stored
// (0 for none or an unknown recording): the answer to a start.
func (s *Store) BlobStored(id string) int64 {
	b, err := s.lockBlob(id)
	if err != nil {
		return 0
	}
	defer b.mu.Unlock()
	if !b.exists {
		return 0
	}
	return b.bsize
}

// OpenBlob opens a recording's side blob for reading; ErrNotFound when it
// has none.
func (s *Store) OpenBlob(id string) (File, error) {
	return s.openFile(id, "blob", s.sideBlobPath)
}

// BlobDigest recomputes the sha256 (hex) and size of a stored side blob,
// to check it against the signed metadata; ErrNotFound when there is none.
func (s *Store) BlobDigest(id string) (string, int64, error) {
	return digestFile("blob", id, s.OpenBlob)
}
