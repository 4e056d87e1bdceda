package store

import (
	"errors"
	"fmt"
)

// Sentinel errors; callers test them with errors.Is.
var (
	// ErrNotFound: no recording with that session id.
	ErrNotFound = errors.New("store: recording not found")
	// ErrOwner: the session id belongs to a recording of another host.
	ErrOwner = errors.New("store: recording belongs to another host")
	// ErrFinished: the recording is finished and takes no more bytes.
	ErrFinished = errors.New("store: recording is finished")
	// ErrDigest: the stored bytes do not match the digest or size the host
	// finished with; they were discarded and the host starts again.
	ErrDigest = errors.New("store: stored bytes do not match the digest")
	// ErrConflict: the recording was finished with another digest.
	ErrConflict = errors.New("store: recording already finished with another digest")
	// ErrChunk: a chunk that is empty or does not end on a line.
	ErrChunk = errors.New("store: chunk must be whole asciicast lines")
	// ErrQuery: a search with no word to look for.
	ErrQuery = errors.New("store: search needs a word of at least two letters or digits")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrLocked: another process holds the index.
	ErrLocked = errors.New("store: index in use by another process")
)

// OffsetError is returned by Append when the chunk does not start where the
// stored bytes end; Stored is where the host must resume.
type OffsetError struct {
	Stored int64
}

func (e *OffsetError) Error() string {
	return fmt.Sprintf("store: chunk does not start at the stored size %d", e.Stored)
}
