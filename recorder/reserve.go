package recorder

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DefaultReserveBytes is the room the spool keeps for closing recordings
// when its disk fills.
const DefaultReserveBytes = 1 << 20

// reserveFile is the spool's ballast: ReserveBytes allocated on the
// spool's disk while it has room. When a disk that filled up keeps a
// recording's metadata from being written, the spool deletes the ballast
// and writes it again, so the recording closes with the true reason (disk
// full) and can ship, which empties the spool. The ballast is made again
// once the disk has room.
const reserveFile = ".reserve"

// ensureReserve allocates the ballast if it is missing and nothing waits
// to be written. A disk without room for it is not an error: the ballast
// is made later.
func (s *Spool) ensureReserve(ctx context.Context) {
	if s.cfg.ReserveBytes <= 0 {
		return
	}
	s.mu.Lock()
	skip := s.reserved || len(s.pending) > 0
	s.mu.Unlock()
	if skip {
		return
	}
	path := filepath.Join(s.cfg.Dir, reserveFile)
	err := allocate(path, s.cfg.ReserveBytes)
	if err != nil {
		_ = os.Remove(path)
		if !errors.Is(err, unix.ENOSPC) {
			s.cfg.Logger.WarnContext(ctx, "recorder: cannot reserve room for closing recordings", "file", path, "err", err)
		}
		return
	}
	s.mu.Lock()
	s.reserved = true
	s.mu.Unlock()
}

// allocate makes path exactly size bytes of allocated blocks.
func allocate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		// A file system without fallocate: write the zeros.
		_, err = f.WriteAt(make([]byte, size), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// releaseReserve deletes the ballast and reports whether there was one.
func (s *Spool) releaseReserve() bool {
	s.mu.Lock()
	had := s.reserved
	s.reserved = false
	s.mu.Unlock()
	err := os.Remove(filepath.Join(s.cfg.Dir, reserveFile))
	return had || err == nil
}

// writeFinal writes the final metadata of a recording. When the disk is
// full it uses the ballast; when even that fails, the metadata waits in
// memory and the flusher writes it once the disk has room, so the
// recording keeps its true reason and ships without a restart.
func (s *Spool) writeFinal(ctx context.Context, m Metadata) error {
	err := s.writeMetadata(m)
	if err != nil && s.releaseReserve() {
		s.cfg.Logger.WarnContext(ctx, "recorder: the spool's disk is full; using its reserve to close a recording",
			"session_id", m.SessionID, "err", err)
		err = s.writeMetadata(m)
	}
	if err == nil {
		return nil
	}
	s.mu.Lock()
	s.pending[m.SessionID] = m
	s.mu.Unlock()
	s.cfg.Logger.ErrorContext(ctx, "recorder: cannot write a finished recording's metadata; retrying until the disk has room",
		"session_id", m.SessionID, "err", err)
	return err
}

// retryPending writes the metadata that waits for room on the disk.
func (s *Spool) retryPending(ctx context.Context) {
	s.mu.Lock()
	waiting := make([]Metadata, 0, len(s.pending))
	for _, m := range s.pending {
		waiting = append(waiting, m)
	}
	s.mu.Unlock()
	for _, m := range waiting {
		if err := s.writeMetadata(m); err != nil {
			continue
		}
		s.mu.Lock()
		delete(s.pending, m.SessionID)
		s.mu.Unlock()
		s.cfg.Logger.InfoContext(ctx, "recorder: finished recording's metadata written once the disk had room",
			"session_id", m.SessionID, "incomplete", m.Incomplete)
		s.signalChange()
	}
}

// Pending returns the ids of finished recordings whose metadata waits for
// room on the disk.
func (s *Spool) Pending() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.pending))
	for id := range s.pending {
		ids = append(ids, id)
	}
	return ids
}
