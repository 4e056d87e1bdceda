package recordertest

import (
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sshward/sshward/recorder"
)

// SlowDisk is a spool's file opener (recorder.SpoolConfig.OpenFile) whose
// recording files (casts and side blobs) are slow or stall on command, for
// the paths where the recorder cannot keep up with a session: every write
// to them first sleeps Delay, and while the disk is held (Hold) it waits
// until Release. Metadata files are written as on a normal disk.
type SlowDisk struct {
	// Delay is slept before every write to a recording file.
	Delay time.Duration

	mu   sync.Mutex    // guards gate
	gate chan struct{} // non-nil while held; closed by Release

	stalled atomic.Int64 // writes that waited for a Release
}

// Hold makes every later write to a recording file wait until Release.
func (d *SlowDisk) Hold() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gate == nil {
		d.gate = make(chan struct{})
	}
}

// Release lets the held writes go on, and later ones run unheld.
func (d *SlowDisk) Release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gate != nil {
		close(d.gate)
		d.gate = nil
	}
}

// Stalled is how many writes have waited for a Release so far.
func (d *SlowDisk) Stalled() int64 { return d.stalled.Load() }

// OpenFile is os.OpenFile on the disk d.
func (d *SlowDisk) OpenFile(name string, flag int, perm os.FileMode) (recorder.File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(name, ".cast") && !strings.HasSuffix(name, ".blob") {
		return f, nil
	}
	return &slowFile{File: f, disk: d}, nil
}

type slowFile struct {
	*os.File
	disk *SlowDisk
}

func (f *slowFile) Write(p []byte) (int, error) {
	if d := f.disk.Delay; d > 0 {
		time.Sleep(d)
	}
	f.disk.mu.Lock()
	gate := f.disk.gate
	f.disk.mu.Unlock()
	if gate != nil {
		f.disk.stalled.Add(1)
		<-gate
	}
	return f.File.Write(p)
}
