package recorder_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// The crash tests re-run this test binary as a child that records and is
// then killed with SIGKILL. The child's mode comes from these variables.
const (
	crashEnvDir  = "SSHWARD_RECORDER_CRASH_DIR"
	crashEnvMode = "SSHWARD_RECORDER_CRASH_MODE"
	crashLines   = 50
)

func crashLine(i int) string { return fmt.Sprintf("line %03d héllo ✓ 日本\r\n", i) }

// TestCrashChild is the child; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		return
	}
	mode := os.Getenv(crashEnvMode)
	interval := time.Hour // only explicit flushes
	if mode == "timer" {
		interval = 20 * time.Millisecond
	}
	s, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{Dir: dir, FlushInterval: interval})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	r, err := s.Create(context.Background(), testMetadata("crash-1"), testHeader)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	for i := range crashLines {
		if err := r.Output([]byte(crashLine(i))); err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		if mode != "timer" {
			if err := r.Flush(); err != nil {
				fmt.Println("error:", err)
				os.Exit(2)
			}
		}
	}
	// A rune split across reads is carried, not written: it must not
	// appear half in the file.
	_ = r.Output([]byte("日"[:2]))
	if mode == "timer" {
		time.Sleep(200 * time.Millisecond) // several flush intervals
	}
	if mode == "half-line" {
		// As if the kill came in the middle of a write.
		f, err := os.OpenFile(filepath.Join(dir, "crash-1.cast"), os.O_WRONLY|os.O_APPEND, 0)
		if err == nil {
			_, err = f.WriteString(`[9.5, "o", "half a li`)
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
	}
	fmt.Println("ready")
	time.Sleep(time.Minute) // killed long before
	os.Exit(3)
}

func TestCrashRepair(t *testing.T) {
	for _, mode := range []string{"flush", "timer", "half-line"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			runAndKill(t, dir, mode)

			castPath, metaPath := filepath.Join(dir, "crash-1.cast"), filepath.Join(dir, "crash-1.json")
			before, err := os.ReadFile(castPath)
			if err != nil {
				t.Fatal(err)
			}
			if m := recordertest.MustReadMetadata(t, metaPath); m.Finished {
				t.Fatalf("metadata finished before the repair: %+v", m)
			}

			clock := newFakeClock(0)
			var logs strings.Builder
			s := recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir, Now: clock.Now, Logger: newTestLogger(&logs)})
			after, err := os.ReadFile(castPath)
			if err != nil {
				t.Fatal(err)
			}
			if len(after) == 0 || after[len(after)-1] != '\n' || !strings.HasPrefix(string(before), string(after)) {
				t.Fatalf("repaired cast is not a prefix ending in a newline:\n%q", after)
			}
			wantCut := 0
			if mode == "half-line" {
				wantCut = len(`[9.5, "o", "half a li`)
			}
			if len(before)-len(after) != wantCut {
				t.Errorf("repair cut %d bytes, want %d", len(before)-len(after), wantCut)
			}

			_, evs := recordertest.MustReadCast(t, castPath)
			var want strings.Builder
			for i := range crashLines {
				want.WriteString(crashLine(i))
			}
			if got := recordertest.Data(evs, recorder.CodeOutput); got != want.String() {
				t.Errorf("output after repair\n got %q\nwant %q", got, want.String())
			}
			if ms := recordertest.Markers(evs); len(ms) != 1 || !strings.HasPrefix(ms[0], "session start user=alice") {
				t.Errorf("markers %q", ms)
			}

			m := recordertest.MustReadMetadata(t, metaPath)
			sum, size, err := recorder.Digest(castPath)
			if err != nil {
				t.Fatal(err)
			}
			wantIncomplete := "agent stopped before the session ended (repaired at 2026-11-21T10:00:00Z)"
			switch {
			case m.Complete || !m.Finished || m.Incomplete != wantIncomplete:
				t.Errorf("metadata complete=%v finished=%v incomplete=%q", m.Complete, m.Finished, m.Incomplete)
			case m.SHA256 != sum || m.CastBytes != size:
				t.Errorf("metadata sha256 %s size %d, file %s %d", m.SHA256, m.CastBytes, sum, size)
			case m.BytesOut != int64(want.Len()):
				t.Errorf("bytes_out %d, want %d", m.BytesOut, want.Len())
			case !m.End.After(m.Start) && len(evs) > 1:
				t.Errorf("end %v not after start %v", m.End, m.Start)
			}
			if !strings.Contains(logs.String(), "repaired recording") || !strings.Contains(logs.String(), "session_id=crash-1") {
				t.Errorf("repair not logged:\n%s", logs.String())
			}
			if got := recordertest.AsciinemaCat(t, castPath); string(got) != want.String() {
				t.Errorf("asciinema cat of the repaired cast printed %q", got)
			}

			// The repaired recording is finished: List shows it, Remove takes it.
			es, err := s.List(context.Background())
			if err != nil || len(es) != 1 || es[0].Live {
				t.Fatalf("List after repair: %+v, %v", es, err)
			}
			if err := s.Remove(context.Background(), "crash-1"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// runAndKill starts the child in dir, waits for "ready" and kills it with
// SIGKILL.
func runAndKill(t *testing.T, dir, mode string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvMode+"="+mode)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if sc.Text() == "ready" {
			ready = true
			break
		}
		t.Logf("child: %s", sc.Text())
	}
	if !ready {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child never got ready")
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	go io.Copy(io.Discard, stdout) //nolint:errcheck // drain until the pipe closes
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ProcessState.String() != "signal: killed" {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}
}

// TestRepairCutsPartialLine copies a live recording's files, as a crash would
// leave them, appends half a line, and opens a spool on the copy.
func TestRepairCutsPartialLine(t *testing.T) {
	s := recordertest.MustSpool(t, recorder.SpoolConfig{})
	r, err := s.Create(context.Background(), testMetadata("copy"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		_ = r.Output([]byte(crashLine(i)))
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tail string
		cut  int
	}{
		{"half a line", `[1.5, "o", "ha`, len(`[1.5, "o", "ha`)},
		{"half a rune", "[1.5, \"o\", \"\xe6\x97", 14},
		{"nothing to cut", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range []string{"copy.cast", "copy.json"} {
				data, err := os.ReadFile(filepath.Join(s.Dir(), name))
				if err != nil {
					t.Fatal(err)
				}
				if name == "copy.cast" {
					data = append(data, tc.tail...)
				}
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// A temporary file of an interrupted metadata write goes too.
			tmp := filepath.Join(dir, ".copy.json.tmp-0011223344556677")
			if err := os.WriteFile(tmp, []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(filepath.Join(dir, "copy.cast"))
			recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir})
			after, _ := os.Stat(filepath.Join(dir, "copy.cast"))
			if got := fi.Size() - after.Size(); got != int64(tc.cut) {
				t.Errorf("cut %d bytes, want %d", got, tc.cut)
			}
			_, evs := recordertest.MustReadCast(t, filepath.Join(dir, "copy.cast"))
			if n := strings.Count(recordertest.Data(evs, recorder.CodeOutput), "\r\n"); n != 5 {
				t.Errorf("%d lines after repair, want 5", n)
			}
			if _, err := os.Stat(tmp); !os.IsNotExist(err) {
				t.Errorf("temporary file left: %v", err)
			}
			if m := recordertest.MustReadMetadata(t, filepath.Join(dir, "copy.json")); m.Complete || !m.Finished || m.BytesOut != int64(5*len(crashLine(0))) {
				t.Errorf("metadata %+v", m)
			}
		})
	}
}

// A crash before the header reached the disk leaves an empty cast: the
// repair says so instead of failing.
func TestRepairEmptyAndMissingCast(t *testing.T) {
	for _, tc := range []struct {
		name string
		cast *string
		want string
	}{
		{"empty", new(""), "; no complete line was written"},
		{"partial header", new(`{"version": 2, "wid`), "; no complete line was written"},
		{"missing", nil, "; the cast file is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			m := testMetadata("early")
			m.Start = time.Unix(1700000000, 0).UTC()
			data, _ := json.Marshal(m)
			if err := os.WriteFile(filepath.Join(dir, "early.json"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.cast != nil {
				if err := os.WriteFile(filepath.Join(dir, "early.cast"), []byte(*tc.cast), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir})
			got := recordertest.MustReadMetadata(t, filepath.Join(dir, "early.json"))
			if !got.Finished || got.Complete || !strings.HasSuffix(got.Incomplete, tc.want) {
				t.Errorf("metadata finished=%v complete=%v incomplete=%q", got.Finished, got.Complete, got.Incomplete)
			}
			if tc.cast != nil && (got.CastBytes != 0 || got.SHA256 != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") {
				t.Errorf("cast_bytes %d sha256 %s, want the empty file's", got.CastBytes, got.SHA256)
			}
		})
	}
}
