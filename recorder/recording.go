package recorder

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

	"github.com/sshward/sshward/recorder/atrest"
)

// fileBuffer is the write buffer of one live recording: big enough that a
// busy session makes few write calls, small enough for thousands of idle
// sessions.
const fileBuffer = 32 << 10

// Recording is one session being recorded into the spool. Its methods are
// safe for concurrent use. Output, Input, Resize and Marker behave as the
// Writer's; their bytes reach the file at the latest on the spool's next
// flush. After the first write or flush error every call returns it, and Err
// reports it, so the agent can apply the tier's rule (closed: end the
// session; open: carry on and alert).
type Recording struct {
	spool              *Spool
	meta               Metadata // as created; counts and end are filled on Close
	castPath, metaPath string
	sink               *fileSink
	blob               *fileSink // side blob, opened on its first byte (blob_spool.go)
	w                  *Writer

	bytesOut, bytesIn atomic.Int64
	dropped           atomic.Int64  // output bytes not recorded (Dropped)
	alerted           atomic.Bool   // a write failure was logged
	closing           atomic.Bool   // finish has started
	done              chan struct{} // closed when finish has returned
}

// Create starts a recording of the session m with terminal header h. It
// writes DIR/<session_id>.json (unfinished) and DIR/<session_id>.cast (0600)
// with the header and a start marker
//
//	session start user=… principal=… key_id=… serial=… tier=… from=… kind=… [command=…] [request=… reason=…] [approvers=…]
//
// and flushes them to the file before returning. The marker is written here,
// not by the caller, so every recording names who it is of in the same
// words. A zero m.Start is the spool's Now; the spool's fields of m (counts,
// digest, End, Complete, Finished) are reset. A failure (disk full,
// unwritable) leaves nothing behind.
func (s *Spool) Create(ctx context.Context, m Metadata, h Header) (*Recording, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	id := m.SessionID
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("recorder: create recording %s: %w", id, err)
	}
	s.mu.Lock()
	_, taken := s.live[id]
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, ErrClosed
	case taken:
		s.mu.Unlock()
		return nil, fmt.Errorf("recorder: create recording %s: %w", id, ErrExists)
	}
	s.live[id] = nil // reserve the id while the files are made
	s.mu.Unlock()

	r, err := s.create(m, h)
	s.mu.Lock()
	if err != nil || s.closed {
		delete(s.live, id)
	} else {
		s.live[id] = r
	}
	closed := s.closed
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("recorder: create recording %s: %w", id, err)
	}
	if closed { // Close ran meanwhile and did not see r
		_, _ = r.finish(EndInfo{}, "spool closed before the session ended")
		return nil, ErrClosed
	}
	s.cfg.Logger.DebugContext(ctx, "recorder: recording started", "session_id", id, "tier", m.Tier)
	s.signalChange()
	return r, nil
}

func (s *Spool) create(m Metadata, h Header) (*Recording, error) {
	castPath, metaPath := s.castPath(m.SessionID), s.metaPath(m.SessionID)
	for _, p := range []string{castPath, metaPath, s.blobPath(m.SessionID), sealedStatePath(castPath)} {
		if _, err := os.Lstat(p); err == nil {
			return nil, ErrExists
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if m.Start.IsZero() {
		m.Start = s.cfg.Now()
	}
	m.End, m.ExitStatus, m.ExitSignal, m.EndReason = time.Time{}, nil, "", ""
	m.Flags = nil
	m.BytesOut, m.BytesIn, m.CastBytes, m.SHA256, m.Blob = 0, 0, 0, "", nil
	m.Complete, m.Incomplete, m.Finished = false, "", false

	// Metadata first: a crash then never leaves a cast without metadata.
	if err := s.writeMetadata(m); err != nil {
		return nil, err
	}
	r, err := s.startCast(m, h, castPath)
	if err != nil {
		_ = os.Remove(castPath)
		_ = os.Remove(metaPath)
		return nil, err
	}
	r.metaPath = metaPath
	return r, nil
}

func (s *Spool) startCast(m Metadata, h Header, castPath string) (*Recording, error) {
	f, err := s.cfg.OpenFile(castPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open cast: %w", err)
	}
	sink := &fileSink{f: f, bw: bufio.NewWriterSize(f, fileBuffer), hash: sha256.New()}
	r := &Recording{spool: s, meta: m, castPath: castPath, sink: sink, done: make(chan struct{})}
	var rcpts []age.Recipient
	if s.cfg.Recipients != nil {
		rcpts = s.cfg.Recipients()
	}
	if len(rcpts) > 0 {
		if err := s.sealSink(r, rcpts); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	blob := s.newBlobSink(m.SessionID)
	r.blob = blob
	w, err := NewWriter(sink, h, m.Start, s.cfg.Now)
	r.w = w
	if err == nil {
		w.SetRedaction(s.cfg.Redaction)
		w.SetOutputCRLF(m.OutputNewlines == NewlinesCRLF)
		// Binary output goes to the side blob, losslessly (blob.go); a
		// sealed cast keeps it in the cast (as U+FFFD) rather than leave
		// it readable beside.
		if sink.sealer == nil {
			w.SetBlob(blob, m.BulkKeepBytes, m.OutputNewlines == NewlinesCRLF)
		}
		err = w.Marker(startMarker(m))
	}
	if err == nil {
		// The header reaches the file now, so that even a crash before the
		// first flush leaves a cast that players accept.
		err = sink.flush()
	}
	if err != nil {
		_ = f.Close()
		if sink.sealer != nil {
			_ = sink.sealer.state.Close()
			_ = os.Remove(sealedStatePath(castPath))
		}
		return nil, err
	}
	return r, nil
}

// sealSink makes r's cast sealed to rcpts (sealed.go): Magic first, and
// the state file beside.
func (s *Spool) sealSink(r *Recording, rcpts []age.Recipient) error {
	k := r.sink
	if err := writeAll(k.f, []byte(atrest.Magic)); err != nil {
		return fmt.Errorf("open cast: %w", err)
	}
	st, err := s.cfg.OpenFile(sealedStatePath(r.castPath), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open cast state: %w", err)
	}
	k.bw = nil
	k.sealer = &sealer{recipients: rcpts, state: st, now: s.cfg.Now, fileEnd: int64(len(atrest.Magic)),
		counts: func() (int64, int64) { return r.bytesOut.Load(), r.bytesIn.Load() }}
	return nil
}

// SessionID returns the id the recording was created with.
func (r *Recording) SessionID() string { return r.meta.SessionID }

// CastPath returns the path of the recording's cast file.
func (r *Recording) CastPath() string { return r.castPath }

// Output records terminal output (stdout and stderr alike).
func (r *Recording) Output(p []byte) error {
	r.bytesOut.Add(int64(len(p)))
	return r.checked(r.w.Output(p))
}

// Input records user input when the tier records input (Metadata.RecordInput)
// and is a no-op otherwise.
func (r *Recording) Input(p []byte) error {
	if !r.meta.RecordInput {
		return r.Err()
	}
	r.bytesIn.Add(int64(len(p)))
	return r.checked(r.w.Input(p))
}

// Resize records a window-change.
func (r *Recording) Resize(cols, rows int) error { return r.checked(r.w.Resize(cols, rows)) }

// Marker records a marker, e.g. "subsystem sftp" or "approved by bob".
func (r *Recording) Marker(label string) error { return r.checked(r.w.Marker(label)) }

// Flush is the spool's periodic flush: it applies the redaction flush rule
// (bytes held back as a possible secret are decided) and writes buffered
// events to the file.
func (r *Recording) Flush() error {
	if err := r.w.TickRedaction(); err != nil && !errors.Is(err, ErrClosed) {
		return r.checked(err)
	}
	if err := r.flushBlob(); err != nil {
		return r.checked(err)
	}
	return r.checked(r.sink.flush())
}

// Commit writes every event recorded so far to the file, one write call
// for all of them, and reports whether the file took them: the recorder
// has then accepted those bytes. A closed tier shows the user only output
// the recorder has accepted, so the agent commits before it sends.
//
// Accepted means written to the file (the kernel's page cache): a kill -9
// of the agent loses none of it, and the next OpenSpool keeps every
// committed line. Durability against a crash of the machine is the
// periodic flush's and Close's fsync, as before. Bytes the Writer still
// carries (the tail of a split UTF-8 rune, a possible secret held by
// redaction; a few bytes, at most the redaction window) are not yet in
// any event.
func (r *Recording) Commit() error {
	// The blob's bytes first, without a reference: bytes in the blob file
	// past the last reference are always the last output (text seals the
	// run before it is written), so they are kept and placed even if a
	// crash follows; the reference comes with the run's end or the next
	// flush, not one per commit (blob_spool.go).
	if err := r.blob.flush(); err != nil {
		return r.checked(err)
	}
	return r.checked(r.sink.flush())
}

// Err returns the first write or flush error, or nil. It does not report
// ErrClosed.
func (r *Recording) Err() error {
	if err := r.sink.Err(); err != nil {
		return err
	}
	return r.blob.Err()
}

// checked logs the first write failure of the recording, once.
func (r *Recording) checked(err error) error {
	if err == nil || errors.Is(err, ErrClosed) {
		return err
	}
	if serr := r.Err(); serr != nil && r.alerted.CompareAndSwap(false, true) {
		r.spool.cfg.Logger.Error("recorder: recording write failed",
			"session_id", r.meta.SessionID, "tier", r.meta.Tier, "err", serr)
	}
	return err
}

// Close ends the recording: it writes the bytes still carried and an end
// marker ("session end status=0", "session end signal=KILL
// reason=\"certificate expired\""), flushes and fsyncs the cast, and writes
// the metadata atomically with End, exit, counts, CastBytes, SHA256 and
// Finished=true. Complete is true unless a write failed, in which case the
// cast is cut back to its last '\n' and Incomplete names the error. The
// metadata is returned even with an error. Close runs to the end whatever
// ctx says: a half-closed recording is worse than a late one. A second
// Close returns ErrClosed.
func (r *Recording) Close(ctx context.Context, end EndInfo) (*Metadata, error) {
	m, err := r.finish(end, "")
	if err == nil {
		r.spool.cfg.Logger.DebugContext(ctx, "recorder: recording finished",
			"session_id", m.SessionID, "tier", m.Tier, "cast_bytes", m.CastBytes)
	}
	return m, err
}

// finish is Close; a non-empty incomplete marks the recording incomplete
// for that reason (the spool closing under a live session).
func (r *Recording) finish(end EndInfo, incomplete string) (*Metadata, error) {
	if !r.closing.CompareAndSwap(false, true) {
		return nil, ErrClosed
	}
	defer close(r.done)
	s := r.spool
	defer func() {
		s.mu.Lock()
		delete(s.live, r.meta.SessionID)
		s.mu.Unlock()
		s.signalChange()
	}()

	werr := r.w.finish(endMarker(end))
	berr := r.blob.close() // before the cast: see flushBlob
	if errors.Is(berr, ErrClosed) {
		berr = nil
	}
	cerr := r.sink.close()
	m := r.meta
	r.addCounts(&m)
	m.End = s.cfg.Now()
	m.ExitStatus, m.ExitSignal, m.EndReason = end.ExitStatus, end.ExitSignal, end.Reason
	m.Flags = end.Flags
	m.Complete, m.Finished = true, true
	if incomplete != "" {
		m.Complete, m.Incomplete = false, incomplete
	}
	if n := r.dropped.Load(); n > 0 {
		m.Complete = false
		m.Incomplete = strings.TrimPrefix(m.Incomplete+"; "+droppedReason(n), "; ")
	}
	var errs []error
	// Writer errors come from the sink, so the sink's first error is the one
	// to report; werr and cerr matter only if the sink has none.
	failed := r.Err()
	if failed == nil {
		failed = errors.Join(werr, berr, cerr)
	}
	if failed != nil {
		_ = r.checked(failed)
		errs = append(errs, failed)
		m.Complete = false
		m.Incomplete = "recording failed: " + failed.Error()
		// A failed write may have left part of a line: cut it off, as a
		// crash repair would, and digest what is really on disk.
		if r.sink.sealer != nil {
			if rec, ok, _, err := sealedOnDisk(r.castPath); err != nil {
				errs = append(errs, err)
			} else {
				m.SHA256, m.CastBytes = emptySHA256, 0
				if ok {
					m.CastBytes = rec.PlainEnd
					m.SHA256, err = rec.digest()
					errs = append(errs, err)
				}
			}
		} else {
			if _, err := cutToLastNewline(r.castPath); err != nil {
				errs = append(errs, err)
			}
			if sum, size, err := Digest(r.castPath); err != nil {
				errs = append(errs, err)
			} else {
				m.SHA256, m.CastBytes = sum, size
			}
		}
		blob, err := blobInfoOnDisk(BlobPath(r.castPath), blobStreamEnd(r.castPath))
		if err != nil {
			errs = append(errs, err)
		}
		m.Blob = blob
	} else {
		m.SHA256, m.CastBytes = r.sink.digest()
		m.Blob = r.w.BlobInfo()
	}
	if err := s.writeFinal(context.Background(), m); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return &m, fmt.Errorf("recorder: close recording %s: %w", m.SessionID, err)
	}
	return &m, nil
}

// addCounts sets m's counts to the recording's current ones.
func (r *Recording) addCounts(m *Metadata) {
	m.BytesOut, m.BytesIn = r.bytesOut.Load(), r.bytesIn.Load()
	m.CastBytes = r.sink.Size()
}

// fileSink is the io.Writer under a recording's Writer: a buffered file that
// the spool's flusher flushes from another goroutine, which also hashes and
// counts what it is given. The side blob's sink (blob_spool.go) has no
// file until its first byte (open makes it then) and no hash (the Writer
// hashes blob bytes).
type fileSink struct {
	open    func() (File, error) // with f nil: makes the file on the first write
	bufSize int                  // of bw when open makes the file

	mu     sync.Mutex // guards the fields below
	f      File
	bw     *bufio.Writer
	sealer *sealer   // a sealed cast (sealed.go): no bw; frames instead
	hash   hash.Hash // nil, or sha256 of every byte accepted, i.e. of the file when no write failed
	size   int64
	err    error // first open, write, flush, sync or close error; sticky
	closed bool
}

func (k *fileSink) Write(p []byte) (int, error) {
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
			k.err = err
			return 0, err
		}
		k.f, k.bw = f, bufio.NewWriterSize(f, k.bufSize)
	}
	if z := k.sealer; z != nil {
		z.pend = append(z.pend, p...)
		if len(z.pend) >= fileBuffer && len(p) > 0 && p[len(p)-1] == '\n' {
			if err := k.sealLocked(); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	}
	n, err := k.bw.Write(p)
	if k.hash != nil {
		k.hash.Write(p[:n])
	}
	k.size += int64(n)
	if err != nil {
		k.err = err
	}
	return n, err
}

func (k *fileSink) flush() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil || k.closed || k.f == nil {
		return k.err
	}
	if k.sealer != nil {
		return k.sealLocked()
	}
	k.err = k.bw.Flush()
	return k.err
}

// close flushes, fsyncs and closes the file, if there is one.
func (k *fileSink) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	k.closed = true
	if k.f == nil {
		return k.err
	}
	if k.err == nil && k.sealer != nil {
		k.err = k.sealLocked()
	} else if k.err == nil {
		k.err = k.bw.Flush()
	}
	if k.err == nil {
		k.err = k.f.Sync()
	}
	if err := k.f.Close(); k.err == nil {
		k.err = err
	}
	if z := k.sealer; z != nil {
		if k.err == nil {
			k.err = z.state.Sync()
		}
		if err := z.state.Close(); k.err == nil {
			k.err = err
		}
		z.pend = nil
	}
	k.bw = nil // the buffer is not needed any more
	return k.err
}

// digest returns the sha256 (hex) and count of the bytes accepted.
func (k *fileSink) digest() (string, int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return hex.EncodeToString(k.hash.Sum(nil)), k.size
}

func (k *fileSink) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

func (k *fileSink) Size() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.size
}
