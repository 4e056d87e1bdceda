package recorder_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// mountTmpfs mounts a real tmpfs of size on a fresh directory (CI runs as
// root); where mounting is refused the test says so and stops.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); TestSpoolFullMetadataRetried covers the retry with an injected ENOSPC", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestSpoolFullClosesWithReserve: a real tmpfs fills during a session. The
// spool's reserve gives the metadata room, so Close finishes the recording
// at once with the true reason (disk full), instead of leaving it "live,
// integrity pending" until the agent restarts. Once the recording has
// shipped (Remove) the reserve is made again.
func TestSpoolFullClosesWithReserve(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	ctx := context.Background()
	s := recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir, ReserveBytes: 128 << 10, FlushInterval: 20 * time.Millisecond})
	if fi, err := os.Stat(filepath.Join(dir, ".reserve")); err != nil || fi.Size() != 128<<10 {
		t.Fatalf("reserve: %v %v", fi, err)
	}
	r, err := s.Create(ctx, testMetadata("full"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("output ✓ ", 500) + "\r\n")
	for range 10000 {
		if err = r.Output(line); err != nil {
			break
		}
	}
	if err == nil {
		err = r.Flush()
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Output on a full disk: %v, want ENOSPC", err)
	}
	m, err := r.Close(ctx, recorder.EndInfo{})
	if err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close: %v, want the write failure (ENOSPC)", err)
	}
	onDisk := recordertest.MustReadMetadata(t, filepath.Join(dir, "full.json"))
	if !onDisk.Finished || onDisk.Complete || !strings.Contains(onDisk.Incomplete, "no space left on device") {
		t.Fatalf("metadata on disk: finished=%v complete=%v incomplete=%q, want finished, incomplete for the full disk", onDisk.Finished, onDisk.Complete, onDisk.Incomplete)
	}
	if onDisk.SHA256 != m.SHA256 {
		t.Errorf("digest on disk %s, Close returned %s", onDisk.SHA256, m.SHA256)
	}
	if len(s.Pending()) != 0 {
		t.Errorf("pending %v", s.Pending())
	}
	// Shipped and removed: the disk has room again and the reserve comes back.
	if err := s.Remove(ctx, "full"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the reserve is made again", func() bool {
		fi, err := os.Stat(filepath.Join(dir, ".reserve"))
		return err == nil && fi.Size() == 128<<10
	})
}

// TestSpoolFullMetadataRetried: the disk is so full that not even the
// reserve helps (injected ENOSPC on every metadata write). Close reports
// the failure; the recording stays unfinished on disk while the disk is
// full, and once it has room the spool writes the finished metadata by
// itself, with the true reason, and signals the shipper. No restart.
func TestSpoolFullMetadataRetried(t *testing.T) {
	var disk recordertest.DiskFull
	var logs strings.Builder
	s := recordertest.MustSpool(t, recorder.SpoolConfig{OpenFile: disk.OpenFile, ReserveBytes: -1,
		FlushInterval: 20 * time.Millisecond, Logger: newTestLogger(&logs)})
	ctx := context.Background()
	r, err := s.Create(ctx, testMetadata("stuck"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Output([]byte("before the disk filled\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(); err != nil {
		t.Fatal(err)
	}
	<-s.Changed() // drain Create's signal
	disk.SetFull(true)
	status := 0
	if _, err := r.Close(ctx, recorder.EndInfo{ExitStatus: &status}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close with no room for the metadata: %v, want ENOSPC", err)
	}
	metaPath := filepath.Join(s.Dir(), "stuck.json")
	if m := recordertest.MustReadMetadata(t, metaPath); m.Finished {
		t.Fatalf("metadata finished while the disk is full: %+v", m)
	}
	if got := s.Pending(); len(got) != 1 || got[0] != "stuck" {
		t.Fatalf("Pending = %v, want [stuck]", got)
	}
	time.Sleep(100 * time.Millisecond) // several flushes on a full disk
	if m := recordertest.MustReadMetadata(t, metaPath); m.Finished {
		t.Fatal("metadata written while every write fails")
	}

	for len(s.Changed()) > 0 {
		<-s.Changed()
	}
	disk.SetFull(false)
	select {
	case <-s.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("the spool did not signal the finished recording once the disk had room")
	}
	m := recordertest.MustReadMetadata(t, metaPath)
	if !m.Finished || m.Complete || m.ExitStatus == nil || *m.ExitStatus != 0 {
		t.Fatalf("metadata after the disk recovered: %+v", m)
	}
	if !strings.Contains(m.Incomplete, "recording failed") || !strings.Contains(m.Incomplete, "no space left on device") {
		t.Errorf("incomplete = %q, want the true reason: the disk was full", m.Incomplete)
	}
	_, evs := recordertest.MustReadCast(t, filepath.Join(s.Dir(), "stuck.cast"))
	if got := recordertest.Data(evs, recorder.CodeOutput); got != "before the disk filled\r\n" {
		t.Errorf("cast output %q", got)
	}
	if sum, size, err := recorder.Digest(filepath.Join(s.Dir(), "stuck.cast")); err != nil || sum != m.SHA256 || size != m.CastBytes {
		t.Errorf("digest of the cast %s/%d (%v), metadata says %s/%d", sum, size, err, m.SHA256, m.CastBytes)
	}
	if len(s.Pending()) != 0 {
		t.Errorf("still pending: %v", s.Pending())
	}
	for _, want := range []string{"retrying until the disk has room", "written once the disk had room"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
