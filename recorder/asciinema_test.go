package recorder_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// recordForPlayers writes a recording through the spool: multi-byte text
// split across calls, escapes, input, resizes and markers.
func recordForPlayers(t *testing.T) (path string, output string) {
	t.Helper()
	s := recordertest.MustSpool(t, recorder.SpoolConfig{})
	ctx := context.Background()
	r, err := s.Create(ctx, testMetadata("play-1"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	text := "héllo wörld ✓ 日本\r\n"
	parts := []string{
		"$ ", text[:2], text[2:9], text[9:22], text[22:],
		"\x1b[1;31mred\x1b[0m \"quoted\" back\\slash\ttab\r\n",
		"emoji 🎉 and \u2028 separator\r\n",
	}
	for i, p := range parts {
		if err := r.Output([]byte(p)); err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			_ = r.Input([]byte("x"))
			_ = r.Resize(100, 30)
			_ = r.Marker("approved by bob")
		}
	}
	if _, err := r.Close(ctx, recorder.EndInfo{}); err != nil {
		t.Fatal(err)
	}
	return r.CastPath(), strings.Join(parts, "")
}

func TestAsciinemaCatReplaysRecording(t *testing.T) {
	path, want := recordForPlayers(t)
	got := recordertest.AsciinemaCat(t, path)
	if string(got) != want {
		t.Errorf("asciinema cat printed\n%q\nwant\n%q", got, want)
	}
}

func TestAsciinemaPlayAcceptsRecording(t *testing.T) {
	recordertest.NeedTool(t, "asciinema", "asciinema")
	path, _ := recordForPlayers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Without a TTY, play skips all delays (NOTES.md).
	cmd := exec.CommandContext(ctx, "asciinema", "play", "-s", "100", path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("asciinema play: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("héllo wörld ✓ 日本")) || bytes.Contains(out, []byte("Traceback")) {
		t.Errorf("asciinema play printed %q", out)
	}
	if err := os.WriteFile(path, []byte("not a cast\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The same command fails on a broken file, so the check above can fail.
	if out, err := exec.CommandContext(ctx, "asciinema", "play", "-s", "100", path).CombinedOutput(); err == nil {
		t.Errorf("asciinema play accepted a broken file: %s", out)
	}
}
