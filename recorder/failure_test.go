package recorder_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// limitedFile is a real file that runs out of space after limit bytes, as a
// full disk does: a short write with ENOSPC.
type limitedFile struct {
	*os.File
	mu    sync.Mutex
	limit int
}

func (f *limitedFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(p) > f.limit {
		n, _ := f.File.Write(p[:f.limit])
		f.limit = 0
		return n, &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	f.limit -= len(p)
	return f.File.Write(p)
}

// diskFullAfter opens casts that fill up after limit bytes; metadata files
// are unaffected.
func diskFullAfter(limit int) func(string, int, os.FileMode) (recorder.File, error) {
	return func(name string, flag int, perm os.FileMode) (recorder.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil || !strings.HasSuffix(name, ".cast") {
			return f, err
		}
		return &limitedFile{File: f, limit: limit}, nil
	}
}

func TestRecordingWriteFailure(t *testing.T) {
	var logs strings.Builder
	s := recordertest.MustSpool(t, recorder.SpoolConfig{OpenFile: diskFullAfter(64 << 10), Logger: newTestLogger(&logs)})
	ctx := context.Background()
	r, err := s.Create(ctx, testMetadata("full"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if r.Err() != nil {
		t.Fatalf("Err before any failure: %v", r.Err())
	}
	line := []byte(strings.Repeat("output ✓ ", 100) + "\r\n")
	var werr error
	for range 1000 {
		if werr = r.Output(line); werr != nil {
			break
		}
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("Output: %v, want ENOSPC", werr)
	}
	if !errors.Is(r.Err(), syscall.ENOSPC) {
		t.Errorf("Err: %v, want ENOSPC", r.Err())
	}
	if err := r.Marker("later"); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Marker after the failure: %v", err)
	}
	if err := r.Flush(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Flush after the failure: %v", err)
	}

	m, err := r.Close(ctx, recorder.EndInfo{})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Close: %v, want ENOSPC", err)
	}
	if m == nil || m.Complete || !m.Finished || !strings.Contains(m.Incomplete, "no space left on device") {
		t.Fatalf("metadata %+v", m)
	}
	onDisk := recordertest.MustReadMetadata(t, filepath.Join(s.Dir(), "full.json"))
	sum, size, _ := recorder.Digest(filepath.Join(s.Dir(), "full.cast"))
	if onDisk.SHA256 != sum || onDisk.CastBytes != size || onDisk.Complete {
		t.Errorf("metadata on disk %+v, file %s %d", onDisk, sum, size)
	}
	// The partial line the failed write left was cut: the cast still reads.
	_, evs := recordertest.MustReadCast(t, filepath.Join(s.Dir(), "full.cast"))
	if len(evs) < 2 {
		t.Errorf("only %d events kept", len(evs))
	}
	if n := strings.Count(logs.String(), "recording write failed"); n != 1 {
		t.Errorf("write failure logged %d times, want once:\n%s", n, logs.String())
	}
}

func TestCreateFailsWhenUnwritable(t *testing.T) {
	denied := func(suffix string) func(string, int, os.FileMode) (recorder.File, error) {
		return func(name string, flag int, perm os.FileMode) (recorder.File, error) {
			if strings.Contains(name, suffix) {
				return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EACCES}
			}
			return os.OpenFile(name, flag, perm)
		}
	}
	devFull := func(name string, flag int, perm os.FileMode) (recorder.File, error) {
		if strings.HasSuffix(name, ".cast") {
			if f, err := os.OpenFile(name, flag, perm); err == nil { // the file exists, the disk is full
				_ = f.Close()
			}
			return os.OpenFile("/dev/full", os.O_WRONLY, 0)
		}
		return os.OpenFile(name, flag, perm)
	}
	for _, tc := range []struct {
		name     string
		openFile func(string, int, os.FileMode) (recorder.File, error)
		want     error
	}{
		{"cast not writable", denied(".cast"), fs.ErrPermission},
		{"metadata not writable", denied(".json"), fs.ErrPermission},
		{"disk full (/dev/full)", devFull, syscall.ENOSPC},
		{"disk full after a few bytes", diskFullAfter(10), syscall.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := recordertest.MustSpool(t, recorder.SpoolConfig{OpenFile: tc.openFile})
			_, err := s.Create(context.Background(), testMetadata("c"), testHeader)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Create: %v, want %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "recorder: create recording c: ") {
				t.Errorf("error %q does not say what failed", err)
			}
			names, _ := filepath.Glob(filepath.Join(s.Dir(), "c.*"))
			tmps, _ := filepath.Glob(filepath.Join(s.Dir(), ".c.*"))
			if len(names)+len(tmps) != 0 {
				t.Errorf("left behind: %q %q", names, tmps)
			}
		})
	}
}

// TestTmpfsFull fills a real, tiny tmpfs. It needs CAP_SYS_ADMIN to mount;
// the injected failures above cover the same paths where that is missing.
func TestTmpfsFull(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); ENOSPC is covered by TestRecordingWriteFailure with an injected file", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	ctx := context.Background()
	s := recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir})
	r, err := s.Create(ctx, testMetadata("big"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("output ✓ ", 1000) + "\r\n")
	for range 1000 {
		if err = r.Output(line); err != nil {
			break
		}
	}
	if err == nil {
		err = r.Flush()
	}
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(r.Err(), syscall.ENOSPC) {
		t.Fatalf("Output: %v, Err: %v, want ENOSPC", err, r.Err())
	}
	// While the disk is full, new recordings are refused, clearly.
	if _, err := s.Create(ctx, testMetadata("next"), testHeader); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Create on a full disk: %v", err)
	}
	// Close cuts the partial line, which frees room for the metadata.
	m, err := r.Close(ctx, recorder.EndInfo{})
	if !errors.Is(err, syscall.ENOSPC) || m == nil || m.Complete {
		t.Fatalf("Close: %+v, %v", m, err)
	}
	onDisk := recordertest.MustReadMetadata(t, filepath.Join(dir, "big.json"))
	if !onDisk.Finished || onDisk.Complete || !strings.Contains(onDisk.Incomplete, "no space left") {
		t.Errorf("metadata on disk %+v", onDisk)
	}
	recordertest.MustReadCast(t, filepath.Join(dir, "big.cast"))
	if names, _ := filepath.Glob(filepath.Join(dir, "next.*")); len(names) != 0 {
		t.Errorf("refused recording left %q", names)
	}
}
