package recorder

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"
)

// DefaultFlushInterval is how often a live recording reaches the file at
// the latest: the most a kill -9 of the agent can lose.
const DefaultFlushInterval = time.Second

// File is the subset of *os.File that the spool writes recordings and
// metadata through.
type File interface {
	Write(p []byte) (int, error)
	Sync() error
	Close() error
}

// SpoolConfig configures OpenSpool. The zero value of every field but Dir is
// a safe default.
type SpoolConfig struct {
	// Dir holds the recordings; created 0700 if missing. Required.
	Dir string
	// Now is the clock for event times, Start/End and ages; default time.Now.
	Now func() time.Time
	// Logger receives repairs and write failures; default discards.
	Logger *slog.Logger
	// FlushInterval is how often the spool's flusher writes every live
	// recording's buffer to its file; default DefaultFlushInterval.
	// Recordings also flush on Create and Close.
	FlushInterval time.Duration
	// Rand names temporary files; default crypto/rand.Reader.
	Rand io.Reader
	// OpenFile opens the files the spool writes (casts, metadata); default
	// os.OpenFile. Tests inject failing files here.
	OpenFile func(name string, flag int, perm os.FileMode) (File, error)
	// ReserveBytes is the room the spool keeps on its disk for closing
	// recordings when the disk fills (see reserveFile); default
	// DefaultReserveBytes, negative for none.
	ReserveBytes int64
	// Redaction replaces secrets in output and input before they are
	// written (see Redaction); nil means DefaultRedactPatterns. A
	// Redaction without patterns turns redaction off.
	Redaction *Redaction
	// Recipients, when set and returning any, are the age recipients each
	// new recording's cast is sealed to (sealed.go): the playback server's,
	// so that the spool holds no session text. Called once per Create.
	// Sealed recordings keep binary output in the cast (as U+FFFD), not in
	// a side blob.
	Recipients func() []age.Recipient
}

// Check names the first invalid field.
func (c SpoolConfig) Check() error {
	switch {
	case c.Dir == "":
		return errors.New("recorder: spool config: Dir is required")
	case c.FlushInterval < 0:
		return fmt.Errorf("recorder: spool config: FlushInterval %v is negative", c.FlushInterval)
	}
	return nil
}

func (c SpoolConfig) withDefaults() SpoolConfig {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.ReserveBytes == 0 {
		c.ReserveBytes = DefaultReserveBytes
	}
	if c.Redaction == nil {
		c.Redaction = MustDefaultRedaction()
	}
	if c.OpenFile == nil {
		c.OpenFile = func(name string, flag int, perm os.FileMode) (File, error) {
			return os.OpenFile(name, flag, perm)
		}
	}
	return c
}

// Spool is a directory of recordings: DIR/<session_id>.cast (asciicast v2)
// and DIR/<session_id>.json (Metadata). Casts are append-only. One Spool
// holds the directory at a time (an flock on DIR/.lock), so the recordings
// it finds unfinished when it opens were left by a crash.
//
// One flusher goroutine, owned by the Spool and ended by Close, flushes every
// live recording each FlushInterval. One goroutine for all recordings keeps
// idle sessions cheap and makes the no-leak rule easy to check.
type Spool struct {
	cfg  SpoolConfig
	lock *os.File // holds the flock while open

	stop        chan struct{} // closed by Close to end the flusher
	flusherDone chan struct{} // closed by the flusher when it returns

	changed chan struct{} // one pending signal: a recording started or finished

	mu       sync.Mutex            // guards the fields below
	live     map[string]*Recording // by session id; nil value = Create in progress
	pending  map[string]Metadata   // finished recordings whose metadata waits for room on the disk
	reserved bool                  // the reserve file is allocated
	closed   bool
}

// OpenSpool opens (creating if needed) the spool directory, takes its lock
// and repairs every recording a crash left unfinished: the cast is cut back
// to its last '\n' (nothing is appended), and the metadata gets
// Complete=false, Incomplete="agent stopped before the session ended
// (repaired at <time>)", counts and digest of what remains, and
// Finished=true. Each repair is logged. A recording that cannot be repaired
// is logged and left for List to show; it does not stop the spool.
func OpenSpool(ctx context.Context, cfg SpoolConfig) (*Spool, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("recorder: open spool: %w", err)
	}
	if fi, err := os.Stat(cfg.Dir); err != nil {
		return nil, fmt.Errorf("recorder: open spool: %w", err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		cfg.Logger.WarnContext(ctx, "recorder: spool directory is readable by others",
			"dir", cfg.Dir, "mode", fi.Mode().Perm().String())
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{
		cfg:         cfg,
		lock:        lock,
		stop:        make(chan struct{}),
		flusherDone: make(chan struct{}),
		live:        make(map[string]*Recording),
		changed:     make(chan struct{}, 1),
		pending:     make(map[string]Metadata),
	}
	if err := s.repairAll(ctx); err != nil {
		_ = lock.Close()
		return nil, err
	}
	s.ensureReserve(ctx)
	go s.flushLoop()
	return s, nil
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recorder: open spool: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("recorder: open spool %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("recorder: open spool: lock: %w", err)
	}
	return f, nil
}

func (s *Spool) flushLoop() {
	defer close(s.flusherDone)
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			for _, r := range s.liveRecordings() {
				_ = r.Flush()
			}
			s.retryPending(context.Background())
			s.ensureReserve(context.Background())
		}
	}
}

// liveRecordings copies the live set so that I/O happens outside s.mu.
func (s *Spool) liveRecordings() []*Recording {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := make([]*Recording, 0, len(s.live))
	for _, r := range s.live {
		if r != nil {
			rs = append(rs, r)
		}
	}
	return rs
}

// Changed signals (one pending signal, never blocking the spool) that a
// recording was created or finished, so that a shipper need not wait for
// its next poll. It is meant for one reader.
func (s *Spool) Changed() <-chan struct{} { return s.changed }

func (s *Spool) signalChange() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Dir returns the spool directory.
func (s *Spool) Dir() string { return s.cfg.Dir }

func (s *Spool) castPath(id string) string { return filepath.Join(s.cfg.Dir, id+".cast") }
func (s *Spool) metaPath(id string) string { return filepath.Join(s.cfg.Dir, id+".json") }

// Entry is one recording in the spool, as List shows it.
type Entry struct {
	Metadata
	CastPath, MetaPath string
	Live               bool          // not finished: a session is still being recorded
	Age                time.Duration // since Start
	Problem            string        // set when the metadata could not be read; Metadata then holds only SessionID
}

// List returns every recording in the spool, oldest first. Live recordings
// of this Spool show their current counts.
func (s *Spool) List(ctx context.Context) ([]Entry, error) {
	des, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("recorder: list spool: %w", err)
	}
	now := s.cfg.Now()
	var out []Entry
	for _, de := range des {
		id, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || CheckSessionID(id) != nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("recorder: list spool: %w", err)
		}
		e := Entry{CastPath: s.castPath(id), MetaPath: s.metaPath(id)}
		m, err := readMetadata(e.MetaPath)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			e.SessionID, e.Problem = id, "metadata unreadable: "+err.Error()
			out = append(out, e)
			continue
		}
		s.mu.Lock()
		r := s.live[id]
		s.mu.Unlock()
		if r != nil && !m.Finished {
			r.addCounts(&m)
		}
		e.Metadata, e.Live, e.Age = m, !m.Finished, now.Sub(m.Start)
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.SessionID, b.SessionID))
	})
	return out, nil
}

// Remove deletes a finished recording, once the shipper holds an
// acknowledgement for it. It refuses live ones with ErrLive.
func (s *Spool) Remove(ctx context.Context, sessionID string) error {
	if err := CheckSessionID(sessionID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recorder: remove %s: %w", sessionID, err)
	}
	s.mu.Lock()
	_, live := s.live[sessionID]
	closed := s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case live:
		return fmt.Errorf("recorder: remove %s: %w", sessionID, ErrLive)
	}
	m, err := readMetadata(s.metaPath(sessionID))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recorder: remove %s: %w", sessionID, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("recorder: remove %s: %w", sessionID, err)
	}
	if !m.Finished {
		return fmt.Errorf("recorder: remove %s: %w", sessionID, ErrLive)
	}
	// The cast first: a crash in between leaves metadata that List shows and
	// a second Remove completes, never a cast nobody lists.
	if err := os.Remove(s.castPath(sessionID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recorder: remove %s: %w", sessionID, err)
	}
	if err := os.Remove(s.blobPath(sessionID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recorder: remove %s: %w", sessionID, err)
	}
	if err := os.Remove(sealedStatePath(s.castPath(sessionID))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recorder: remove %s: %w", sessionID, err)
	}
	if err := os.Remove(s.metaPath(sessionID)); err != nil {
		return fmt.Errorf("recorder: remove %s: %w", sessionID, err)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		return fmt.Errorf("recorder: remove %s: %w", sessionID, err)
	}
	return nil
}

// Close stops the flusher, finishes every recording still live as
// incomplete ("spool closed before the session ended"), waits for Recording
// Close calls in progress, and releases the directory.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.flusherDone

	var errs []error
	for _, r := range s.liveRecordings() {
		if _, err := r.finish(EndInfo{}, "spool closed before the session ended"); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
		<-r.done
	}
	s.retryPending(context.Background())
	if ids := s.Pending(); len(ids) > 0 {
		errs = append(errs, fmt.Errorf("recorder: close spool: the metadata of %d finished recordings could not be written (disk full?): %s; the next start repairs them",
			len(ids), strings.Join(ids, ", ")))
	}
	if err := s.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("recorder: close spool: %w", err))
	}
	return errors.Join(errs...)
}

// writeMetadata replaces DIR/<id>.json atomically: a temporary file,
// fsync, rename, fsync of the directory.
func (s *Spool) writeMetadata(m Metadata) error {
	data, err := marshalMetadata(m)
	if err != nil {
		return err
	}
	var rnd [8]byte
	if _, err := io.ReadFull(s.cfg.Rand, rnd[:]); err != nil {
		return fmt.Errorf("write metadata: random name: %w", err)
	}
	final := s.metaPath(m.SessionID)
	tmp := filepath.Join(s.cfg.Dir, "."+m.SessionID+".json.tmp-"+hex.EncodeToString(rnd[:]))
	f, err := s.cfg.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	err = writeAll(f, data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write metadata %s: %w", final, err)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		return fmt.Errorf("write metadata %s: %w", final, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
