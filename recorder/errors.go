package recorder

import "errors"

// Sentinel errors. Callers test them with errors.Is; the wrapping error
// names the operation and the file or session.
var (
	// ErrClosed is returned by a Writer, Recording or Spool used after Close.
	ErrClosed = errors.New("recorder: closed")
	// ErrMalformed marks a cast line that is not asciicast v2.
	ErrMalformed = errors.New("recorder: malformed asciicast")
	// ErrLineTooLong marks a cast line longer than MaxLineBytes.
	ErrLineTooLong = errors.New("recorder: asciicast line too long")
	// ErrInvalidSessionID marks a session id that is not a safe file name.
	ErrInvalidSessionID = errors.New("recorder: invalid session id")
	// ErrExists is returned by Create for a session id already in the spool.
	ErrExists = errors.New("recorder: recording already exists")
	// ErrNotFound is returned by Remove for a session id not in the spool.
	ErrNotFound = errors.New("recorder: recording not found")
	// ErrLive is returned by Remove for a recording that is not finished.
	ErrLive = errors.New("recorder: recording is still live")
	// ErrLocked is returned by OpenSpool when another Spool (in this or
	// another process) holds the directory.
	ErrLocked = errors.New("recorder: spool directory in use")
)
