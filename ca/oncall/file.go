package oncall

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"
)

// File is a schedule file on disk. ShiftAt re-reads it when its size or
// modification time changed; Reload re-reads it now (SIGHUP). A file that
// no longer parses, or disappears, leaves the last good schedule in force
// and is reported by Reload and Err, so that a bad edit never empties the
// rotation (certificates stay capped at the shifts last read).
type File struct {
	path string

	mu    sync.Mutex // guards the fields below
	sched *Schedule
	mod   time.Time
	size  int64
	gen   uint64 // bumped at every schedule read that changed the file's state
	err   error  // the last read's failure, nil when the file is in force
}

// Open reads the schedule at path; an unreadable or invalid file is an
// error (the CA refuses to start on it, naming the entry).
func Open(path string) (*File, error) {
	f := &File{path: path}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

// Reload reads the file if it changed (force: even if not) and reports
// whether a new schedule is in force. On error the last good one stays.
func (f *File) Reload() (bool, error) { return f.refresh(true) }

func (f *File) refresh(force bool) (bool, error) {
	st, err := os.Stat(f.path)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.err = fmt.Errorf("oncall: schedule %s: %w", f.path, err)
		return false, f.err
	}
	if !force && f.sched != nil && st.ModTime().Equal(f.mod) && st.Size() == f.size {
		return false, f.err
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		f.err = fmt.Errorf("oncall: schedule %s: %w", f.path, err)
		return false, f.err
	}
	f.mod, f.size = st.ModTime(), st.Size()
	s, err := Parse(data)
	if err != nil {
		f.err = fmt.Errorf("oncall: schedule %s: %w", f.path, err)
		return false, f.err
	}
	f.sched, f.err = s, nil
	f.gen++
	return true, nil
}

// Schedule returns the schedule in force (re-reading a changed file) and
// its generation, which grows each time a new schedule takes over.
func (f *File) Schedule() (*Schedule, uint64) {
	_, _ = f.refresh(false)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sched, f.gen
}

// Err is the last read's failure (nil when the file on disk is in force).
func (f *File) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// ShiftAt answers from the schedule in force.
func (f *File) ShiftAt(_ context.Context, user string, t time.Time) (Shift, bool, error) {
	s, _ := f.Schedule()
	if s == nil { // a File not made by Open
		return Shift{}, false, fmt.Errorf("oncall: schedule %s: not loaded (use oncall.Open)", f.path)
	}
	sh, ok := s.ShiftAt(user, t)
	return sh, ok, nil
}

// Generation implements the CA's optional change signal: a new value means
// the schedule changed and shifts must be re-checked.
func (f *File) Generation() uint64 {
	_, gen := f.Schedule()
	return gen
}
