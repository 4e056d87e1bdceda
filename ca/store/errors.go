package store

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns wraps at most one of
// these; test with errors.Is.
var (
	// ErrNotFound: the user, session, certificate, join token or meta key
	// does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a record that must be created only once already exists
	// (a join token id).
	ErrExists = errors.New("already exists")
	// ErrDuplicateSerial: PutCert was given a serial that is already recorded.
	ErrDuplicateSerial = errors.New("duplicate certificate serial")
	// ErrClaimed: the single-use certificate serial was claimed before.
	ErrClaimed = errors.New("single-use serial already claimed")
	// ErrTokenUsed: the join token was consumed before.
	ErrTokenUsed = errors.New("join token already used")
	// ErrTokenExpired: the join token is past its ExpiresAt.
	ErrTokenExpired = errors.New("join token expired")
	// ErrInvalid: a record failed validation (empty key, unknown kind, …).
	// The wrapping message names the field.
	ErrInvalid = errors.New("invalid record")
	// ErrLocked: another process (or another Open in this one) holds the
	// file lock; bbolt allows one writer process per file.
	ErrLocked = errors.New("store file is locked by another process")
	// ErrClosed: the DB was closed.
	ErrClosed = errors.New("store closed")
	// ErrReadOnly: Update was called on a DB opened with Options.ReadOnly.
	ErrReadOnly = errors.New("store opened read-only")
	// ErrUnsupported: the operation does not apply to this store engine
	// (a file snapshot of an etcd store).
	ErrUnsupported = errors.New("not supported by this store engine")
	// ErrSchema: the file was written by a newer, incompatible version.
	ErrSchema = errors.New("unsupported store schema version")
)

// ChainError reports where the audit hash chain breaks. VerifyAudit and
// VerifyFile return it (as *ChainError) for an edited record (hash
// mismatch), a deleted record (sequence gap or PrevHash mismatch) and a
// truncated tail (the head kept beside the log names a record that is gone).
type ChainError struct {
	Seq    uint64 // first sequence number at which the chain does not hold
	Reason string // what was wrong there, for people
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("store: audit chain broken at seq %d: %s", e.Seq, e.Reason)
}
