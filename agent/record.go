package agent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/sshward/sshward/recorder"
)

// Spool is the subset of the recorder's spool the agent uses. RecorderSpool
// adapts a *recorder.Spool; tests wrap it to inject failures.
type Spool interface {
	Create(ctx context.Context, m recorder.Metadata, h recorder.Header) (Recording, error)
}

// Recording is one live recording (the subset of *recorder.Recording the
// agent uses). Calls are safe for concurrent use.
type Recording interface {
	Output(p []byte) error
	Input(p []byte) error
	Resize(cols, rows int) error
	Marker(label string) error
	// Commit writes what was recorded so far to the spool file and
	// reports whether it was taken (see recorder.Recording.Commit).
	Commit() error
	// Err reports a write failure that happened in the background (the
	// spool flushes buffered events every second).
	Err() error
	Close(ctx context.Context, end recorder.EndInfo) (*recorder.Metadata, error)
}

// RecorderSpool adapts a *recorder.Spool to Spool.
func RecorderSpool(s *recorder.Spool) Spool { return recorderSpool{s} }

type recorderSpool struct{ s *recorder.Spool }

func (r recorderSpool) Create(ctx context.Context, m recorder.Metadata, h recorder.Header) (Recording, error) {
	rec, err := r.s.Create(ctx, m, h)
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// sessionRecording applies the tier's failure mode to one session's
// recording. The first failed write decides: with FailClosed the data that
// could not be recorded is withheld from the user and onFail ends the
// session; with FailOpen the session goes on unrecorded after one alert.
type sessionRecording struct {
	rec  Recording // nil: the session runs unrecorded (FailOpen after a failure)
	mode FailureMode
	// onFail is called once, on the first failure; closing says it
	// happened while the recording was being finished.
	onFail  func(err error, closing bool)
	closing atomic.Bool // set by close
	// onDrop is called once, on the first output dropped because the
	// recorder fell behind (open tier, recqueue.go), with its size.
	onDrop      func(n int64)
	dropAlerted atomic.Bool

	mu     sync.Mutex // guards failed
	failed bool
}

// write records with fn and reports whether the caller may pass the data on.
func (r *sessionRecording) write(fn func(Recording) error) bool {
	r.mu.Lock()
	failed, rec := r.failed, r.rec
	r.mu.Unlock()
	if failed || rec == nil {
		return r.mode == FailOpen
	}
	if err := fn(rec); err != nil {
		if errors.Is(err, recorder.ErrClosed) {
			// The session's recording is over (typing after the exit):
			// nothing more is recorded, and that is no failure.
			return r.mode == FailOpen
		}
		r.fail(err)
		return r.mode == FailOpen
	}
	return true
}

// acks reports whether output must be committed to the recording before
// the user sees it: a closed tier shows only what the recorder accepted.
func (r *sessionRecording) acks() bool {
	return r.mode == FailClosed && r.rec != nil
}

// commit writes what was recorded to the spool file; false: the recorder
// did not take it, and a closed tier must not show it.
func (r *sessionRecording) commit() bool {
	return r.write(func(rec Recording) error { return rec.Commit() })
}

func (r *sessionRecording) fail(err error) {
	r.mu.Lock()
	first := !r.failed
	r.failed = true
	r.mu.Unlock()
	if first && r.onFail != nil {
		r.onFail(err, r.closing.Load())
	}
}

func (r *sessionRecording) output(p []byte) bool {
	return r.write(func(rec Recording) error { return rec.Output(p) })
}

func (r *sessionRecording) input(p []byte) bool {
	return r.write(func(rec Recording) error { return rec.Input(p) })
}

func (r *sessionRecording) resize(cols, rows int) {
	r.write(func(rec Recording) error { return rec.Resize(cols, rows) })
}

func (r *sessionRecording) marker(label string) {
	r.write(func(rec Recording) error { return rec.Marker(label) })
}

// unrecorded reports whether nothing more is recorded: the recording failed
// (open tier) or never started.
func (r *sessionRecording) unrecorded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed || r.rec == nil
}

// droppedRecording is a Recording that can mark output it was not given
// (*recorder.Recording is one).
type droppedRecording interface {
	Dropped(n int64) error
}

// dropped records that n bytes of output were sent but not recorded (the
// open tier's recorder fell behind, recqueue.go); the first time, onDrop
// raises the alert.
func (r *sessionRecording) dropped(n int64) {
	r.write(func(rec Recording) error {
		if d, ok := rec.(droppedRecording); ok {
			return d.Dropped(n)
		}
		return rec.Marker(recorder.DroppedLabel(n))
	})
	if r.dropAlerted.CompareAndSwap(false, true) && r.onDrop != nil {
		r.onDrop(n)
	}
}

// check reports a background write failure as a recording failure.
func (r *sessionRecording) check() {
	r.mu.Lock()
	failed, rec := r.failed, r.rec
	r.mu.Unlock()
	if failed || rec == nil {
		return
	}
	if err := rec.Err(); err != nil {
		r.fail(err)
	}
}

// incompleteCloser is a Recording that can be closed as cut short
// (*recorder.Recording is one).
type incompleteCloser interface {
	CloseIncomplete(ctx context.Context, end recorder.EndInfo, reason string) (*recorder.Metadata, error)
}

// close finishes the recording; a failure to finish counts as a recording
// failure for the alert, the session being over anyway. A non-empty cut
// marks the recording incomplete with that reason (the agent stopped under
// the session).
func (r *sessionRecording) close(ctx context.Context, end recorder.EndInfo, cut string) (*recorder.Metadata, error) {
	if r.rec == nil {
		return nil, nil
	}
	r.closing.Store(true)
	var m *recorder.Metadata
	var err error
	if ic, ok := r.rec.(incompleteCloser); ok && cut != "" {
		m, err = ic.CloseIncomplete(ctx, end, cut)
	} else {
		m, err = r.rec.Close(ctx, end)
	}
	if err != nil {
		r.fail(err)
	}
	return m, err
}
