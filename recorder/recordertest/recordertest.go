// Package recordertest holds test helpers for code that records sessions
// (the recorder itself, the host agent, the playback server): a spool in a
// temporary directory, strict cast reading, and a replay through Debian's
// asciinema 2.2.
package recordertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
)

// MustSpool opens a spool (in a new temporary directory unless cfg.Dir is
// set) and closes it when the test ends.
func MustSpool(t testing.TB, cfg recorder.SpoolConfig) *recorder.Spool {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "spool")
	}
	s, err := recorder.OpenSpool(context.Background(), cfg)
	if err != nil {
		t.Fatalf("recordertest: OpenSpool: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, recorder.ErrClosed) {
			t.Errorf("recordertest: Spool.Close: %v", err)
		}
	})
	return s
}

// MustParseCast reads a whole cast strictly, failing the test on any error.
func MustParseCast(t testing.TB, data []byte) (recorder.Header, []recorder.Event) {
	t.Helper()
	rd, err := recorder.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("recordertest: NewReader: %v\n%s", err, data)
	}
	var evs []recorder.Event
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return rd.Header(), evs
		}
		if err != nil {
			t.Fatalf("recordertest: Next: %v\n%s", err, data)
		}
		evs = append(evs, e)
	}
}

// MustReadCast is MustParseCast of the file at path.
func MustReadCast(t testing.TB, path string) (recorder.Header, []recorder.Event) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("recordertest: %v", err)
	}
	return MustParseCast(t, data)
}

// MustReadMetadata reads a recording's metadata file.
func MustReadMetadata(t testing.TB, path string) recorder.Metadata {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("recordertest: %v", err)
	}
	var m recorder.Metadata
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("recordertest: decode %s: %v", path, err)
	}
	return m
}

// Data concatenates the data of the events with code (recorder.CodeOutput,
// say): what a player would print.
func Data(evs []recorder.Event, code string) string {
	var b strings.Builder
	for _, e := range evs {
		if e.Code == code {
			b.WriteString(e.Data)
		}
	}
	return b.String()
}

// Markers returns the labels of the marker events, in order.
func Markers(evs []recorder.Event) []string {
	var ms []string
	for _, e := range evs {
		if e.Code == recorder.CodeMarker {
			ms = append(ms, e.Data)
		}
	}
	return ms
}

// AsciinemaCat replays the cast at path with Debian's asciinema 2.2 and
// returns what it printed: exactly the output data when the file is valid.
// asciinema cat needs a TTY, which script provides; stdin must be /dev/null.
func AsciinemaCat(t testing.TB, path string) []byte {
	t.Helper()
	NeedTool(t, "asciinema", "asciinema")
	NeedTool(t, "script", "bsdutils")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// script runs its command through a shell: quote the path.
	quoted := "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
	cmd := exec.CommandContext(ctx, "script", "-qec", "asciinema cat "+quoted, "/dev/null")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("recordertest: asciinema cat %s: %v\n%s%s", path, err, out, stderr.Bytes())
	}
	return out
}

// NeedTool fails the test, naming the Debian package, when a program is
// missing.
func NeedTool(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found: apt-get install %s", name, pkg)
	}
}
