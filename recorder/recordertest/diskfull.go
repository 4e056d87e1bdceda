package recordertest

import (
	"io/fs"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/sshward/sshward/recorder"
)

// DiskFull is a spool's file opener (recorder.SpoolConfig.OpenFile) for a
// disk that fills and empties on command: while it is full, opening,
// writing and syncing fail with ENOSPC, as on a real full disk, also for
// files opened before it filled. For the paths where mounting a tiny tmpfs
// is not possible or not deterministic (which write hits the end).
type DiskFull struct{ full atomic.Bool }

// SetFull fills (true) or empties (false) the disk.
func (d *DiskFull) SetFull(full bool) { d.full.Store(full) }

// OpenFile is os.OpenFile on the disk d.
func (d *DiskFull) OpenFile(name string, flag int, perm os.FileMode) (recorder.File, error) {
	if d.full.Load() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &fullableFile{File: f, disk: d}, nil
}

type fullableFile struct {
	*os.File
	disk *DiskFull
}

func (f *fullableFile) Write(p []byte) (int, error) {
	if f.disk.full.Load() {
		return 0, &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

func (f *fullableFile) Sync() error {
	if f.disk.full.Load() {
		return &fs.PathError{Op: "sync", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Sync()
}
