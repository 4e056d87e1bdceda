package recorder_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

func TestNewWriterHeader(t *testing.T) {
	start := time.Unix(1700000000, 0)
	var buf bytes.Buffer
	h := recorder.Header{Width: 80, Height: 24, Env: map[string]string{"TERM": "xterm", "SHELL": "/bin/sh"}, Title: "web1 <root>"}
	if _, err := recorder.NewWriter(&buf, h, start, nil); err != nil {
		t.Fatal(err)
	}
	want := `{"version":2,"width":80,"height":24,"timestamp":1700000000,"env":{"SHELL":"/bin/sh","TERM":"xterm"},"title":"web1 \u003croot\u003e"}` + "\n"
	if buf.String() != want {
		t.Errorf("header line\n got %s\nwant %s", buf.String(), want)
	}

	for _, tc := range []struct {
		name string
		h    recorder.Header
	}{
		{"zero width", recorder.Header{Height: 24}},
		{"negative height", recorder.Header{Width: 80, Height: -1}},
		{"version 3", recorder.Header{Version: 3, Width: 80, Height: 24}},
		{"huge width", recorder.Header{Width: 1 << 20, Height: 24}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if _, err := recorder.NewWriter(&buf, tc.h, start, nil); err == nil {
				t.Fatal("NewWriter accepted a bad header")
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %q for a bad header", buf.String())
			}
		})
	}
}

func TestWriterRoundTrip(t *testing.T) {
	type call struct {
		code string // "o", "i", "r", "m"
		data string // for r: "COLSxROWS"
	}
	for _, tc := range []struct {
		name  string
		calls []call
		want  []recorder.Event // times are 0.5 s apart: the clock steps 0.5 s per event, start excluded
	}{
		{"ascii", []call{{"o", "hello\r\n"}}, []recorder.Event{{0.5, "o", "hello\r\n"}}},
		{"multi-byte", []call{{"o", "héllo wörld ✓ 日本 🎉"}}, []recorder.Event{{0.5, "o", "héllo wörld ✓ 日本 🎉"}}},
		{"json specials", []call{{"o", "\"quoted\" back\\slash \x1b[31mred\x1b[0m \x00\x07\b\f\t\x7f"}},
			[]recorder.Event{{0.5, "o", "\"quoted\" back\\slash \x1b[31mred\x1b[0m \x00\x07\b\f\t\x7f"}}},
		{"line separators", []call{{"o", "a\u2028b\u2029c"}}, []recorder.Event{{0.5, "o", "a\u2028b\u2029c"}}},
		{"html", []call{{"o", "<script>&"}}, []recorder.Event{{0.5, "o", "<script>&"}}},
		{"all kinds", []call{{"o", "$ "}, {"i", "ls\r"}, {"r", "120x40"}, {"m", "approved by bob"}, {"o", "file\r\n"}},
			[]recorder.Event{{0.5, "o", "$ "}, {1, "i", "ls\r"}, {1.5, "r", "120x40"}, {2, "m", "approved by bob"}, {2.5, "o", "file\r\n"}}},
		{"empty output writes nothing", []call{{"o", ""}, {"o", "x"}}, []recorder.Event{{0.5, "o", "x"}}}, // no clock read for nothing
		{"marker with invalid utf-8", []call{{"m", "bad\xffbyte"}}, []recorder.Event{{0.5, "m", "bad\uFFFDbyte"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(500 * time.Millisecond)
			start := clock.Now()
			var buf bytes.Buffer
			w, err := recorder.NewWriter(&buf, testHeader, start, clock.Now)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.calls {
				var err error
				switch c.code {
				case "o":
					err = w.Output([]byte(c.data))
				case "i":
					err = w.Input([]byte(c.data))
				case "r":
					var cols, rows int
					fmt.Sscanf(c.data, "%dx%d", &cols, &rows)
					err = w.Resize(cols, rows)
				case "m":
					err = w.Marker(c.data)
				}
				if err != nil {
					t.Fatalf("%s %q: %v", c.code, c.data, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			h, evs := recordertest.MustParseCast(t, buf.Bytes())
			if h.Width != 80 || h.Height != 24 || h.Version != 2 || h.Timestamp != start.Unix() || h.Env["TERM"] != "xterm-256color" {
				t.Errorf("header %+v", h)
			}
			if len(evs) != len(tc.want) {
				t.Fatalf("events\n got %+v\nwant %+v", evs, tc.want)
			}
			for i := range evs {
				g, w := evs[i], tc.want[i]
				if g.Code != w.Code || g.Data != w.Data || math.Abs(g.Time-w.Time) > 1e-6 {
					t.Errorf("event %d: got %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// TestWriterSplitRune splits multi-byte text at every byte offset (and every
// pair of offsets) across Output calls: the recorded text must be intact.
func TestWriterSplitRune(t *testing.T) {
	const text = "héllo wörld ✓ 日本 🎉"
	record := func(parts ...string) string {
		var buf bytes.Buffer
		w, err := recorder.NewWriter(&buf, testHeader, time.Time{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			if err := w.Output([]byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		_, evs := recordertest.MustParseCast(t, buf.Bytes())
		for _, e := range evs {
			if !utf8.ValidString(e.Data) {
				t.Fatalf("event data %q is not UTF-8", e.Data)
			}
		}
		return recordertest.Data(evs, recorder.CodeOutput)
	}
	for i := 0; i <= len(text); i++ {
		if got := record(text[:i], text[i:]); got != text {
			t.Errorf("split at %d: got %q", i, got)
		}
		for j := i; j <= len(text); j++ {
			if got := record(text[:i], text[i:j], text[j:]); got != text {
				t.Errorf("split at %d,%d: got %q", i, j, got)
			}
		}
	}
	// One byte per call: every rune crosses calls.
	var parts []string
	for i := range len(text) {
		parts = append(parts, text[i:i+1])
	}
	if got := record(parts...); got != text {
		t.Errorf("byte by byte: got %q", got)
	}
}

func TestWriterInvalidUTF8(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts []string
		want  string
	}{
		{"lone continuation byte", []string{"a\x80b"}, "a\uFFFDb"},
		{"0xff", []string{"\xff"}, "\uFFFD"},
		{"run of invalid bytes is one U+FFFD", []string{"a\xff\xfe\x80b"}, "a\uFFFDb"},
		{"run across calls is one U+FFFD", []string{"a\xff", "\xfeb"}, "a\uFFFDb"},
		{"incomplete rune then ascii", []string{"\xe6\x97", "x"}, "\uFFFDx"},
		{"incomplete rune at close", []string{"ok\xe6\x97"}, "ok\uFFFD"},
		{"overlong encoding", []string{"\xc0\xaf"}, "\uFFFD"},
		{"surrogate", []string{"\xed\xa0\x80"}, "\uFFFD"},
		{"real U+FFFD is kept apart from a run", []string{"\uFFFD\xff"}, "\uFFFD\uFFFD"},
		{"valid after invalid", []string{"\xff", "日本"}, "\uFFFD日本"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := recorder.NewWriter(&buf, testHeader, time.Time{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.parts {
				if err := w.Output([]byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			_, evs := recordertest.MustParseCast(t, buf.Bytes())
			got := recordertest.Data(evs, recorder.CodeOutput)
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if ref := strings.ToValidUTF8(strings.Join(tc.parts, ""), "\uFFFD"); got != ref {
				t.Errorf("got %q, strings.ToValidUTF8 gives %q", got, ref)
			}
		})
	}
}

// Output and Input carry their incomplete runes separately.
func TestWriterSeparateCarries(t *testing.T) {
	var buf bytes.Buffer
	w, err := recorder.NewWriter(&buf, testHeader, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return w.Output([]byte("日"[:2])) },
		func() error { return w.Input([]byte("✓"[:1])) },
		func() error { return w.Output([]byte("日"[2:] + "本")) },
		func() error { return w.Input([]byte("✓"[1:])) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, evs := recordertest.MustParseCast(t, buf.Bytes())
	if got := recordertest.Data(evs, recorder.CodeOutput); got != "日本" {
		t.Errorf("output %q", got)
	}
	if got := recordertest.Data(evs, recorder.CodeInput); got != "✓" {
		t.Errorf("input %q", got)
	}
}

// A large burst becomes several events, each line far below recorder.MaxLineBytes,
// and NUL bytes (6 bytes each once escaped) do not break that bound.
func TestWriterSplitsLargeOutput(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 1<<20)
	for i := range random {
		random[i] = byte(rnd.UintN(256))
	}
	mixed := []byte(strings.Repeat("ok ✓ 日本 \x00\"\u2028 ", 20_000))
	for i := range len(mixed) / 97 { // sprinkle bytes that break runes
		mixed[i*97] = 0xff
	}
	for _, tc := range []struct {
		name  string
		data  []byte
		chunk int // bytes per Output call; 0: all at once
	}{
		{"nul bytes", make([]byte, 1<<20), 0},
		{"multi-byte", []byte(strings.Repeat("日本語 ", 100_000)), 0},
		{"ascii", bytes.Repeat([]byte("0123456789abcdef"), 50_000), 0},
		{"random bytes", random, 0},
		{"random bytes in odd chunks", random, 32<<10 + 1},
		{"mixed in odd chunks", mixed, 70_001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lines lineRecorder
			w, err := recorder.NewWriter(&lines, testHeader, time.Time{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for rest := tc.data; len(rest) > 0; {
				n := len(rest)
				if tc.chunk > 0 {
					n = min(n, tc.chunk)
				}
				if err := w.Output(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if len(lines.writes) < 3 {
				t.Errorf("%d writes: a burst was not split", len(lines.writes))
			}
			for i, l := range lines.writes {
				if len(l) > maxWrite {
					t.Errorf("write %d is %d bytes", i, len(l))
				}
			}
			_, evs := recordertest.MustParseCast(t, lines.all())
			if got, want := recordertest.Data(evs, recorder.CodeOutput), strings.ToValidUTF8(string(tc.data), "\uFFFD"); got != want {
				t.Errorf("data differs after the round trip (%d vs %d bytes)", len(got), len(want))
			}
		})
	}
}

// maxWrite bounds one event line: 64 KiB of escaped data, plus what the
// last 256-byte chunk can add (6 bytes per byte), plus the frame.
const maxWrite = 64<<10 + 6*256 + 64

// lineRecorder keeps every Write call apart.
type lineRecorder struct {
	mu     sync.Mutex
	writes [][]byte
}

func (l *lineRecorder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, bytes.Clone(p))
	return len(p), nil
}

func (l *lineRecorder) all() []byte { return bytes.Join(l.writes, nil) }

// Concurrent writers: every Write call is exactly one whole line, and each
// goroutine's events keep their order.
func TestWriterConcurrent(t *testing.T) {
	var lines lineRecorder
	w, err := recorder.NewWriter(&lines, testHeader, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				var err error
				switch g % 4 {
				case 0:
					err = w.Output(fmt.Appendf(nil, "g%d-%d ✓\n", g, i))
				case 1:
					err = w.Input(fmt.Appendf(nil, "g%d-%d ✓\n", g, i))
				case 2:
					err = w.Resize(80+i, 24+g)
				case 3:
					err = w.Marker(fmt.Sprintf("g%d-%d", g, i))
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if len(lines.writes) != 1+goroutines*each {
		t.Fatalf("%d writes, want %d", len(lines.writes), 1+goroutines*each)
	}
	for i, l := range lines.writes {
		if bytes.IndexByte(l, '\n') != len(l)-1 {
			t.Fatalf("write %d is not one whole line: %q", i, l)
		}
	}
	_, evs := recordertest.MustParseCast(t, lines.all())
	next := map[string]int{}
	for _, e := range evs {
		var g, i int
		switch e.Code {
		case recorder.CodeOutput, recorder.CodeInput:
			fmt.Sscanf(e.Data, "g%d-%d", &g, &i)
		case recorder.CodeMarker:
			fmt.Sscanf(e.Data, "g%d-%d", &g, &i)
		case recorder.CodeResize:
			cols, rows, err := e.Size()
			if err != nil {
				t.Fatal(err)
			}
			g, i = rows-24, cols-80
		}
		key := fmt.Sprint(g)
		if i != next[key] {
			t.Fatalf("goroutine %d: event %d came when %d was due", g, i, next[key])
		}
		next[key]++
	}
}

// failingWriter accepts limit bytes, then fails.
type failingWriter struct {
	limit int
	buf   bytes.Buffer
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.buf.Len()+len(p) > f.limit {
		n := f.limit - f.buf.Len()
		f.buf.Write(p[:n])
		return n, syscall.ENOSPC
	}
	return f.buf.Write(p)
}

func TestWriterErrors(t *testing.T) {
	fw := &failingWriter{limit: 200}
	w, err := recorder.NewWriter(fw, testHeader, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	for range 100 {
		if werr = w.Output([]byte("some output\r\n")); werr != nil {
			break
		}
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("Output error %v, want ENOSPC", werr)
	}
	// Sticky: nothing more is written after a partial line.
	n := fw.buf.Len()
	fw.limit = 1 << 20
	if err := w.Marker("after"); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Marker after a failure: %v", err)
	}
	if err := w.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Close after a failure: %v", err)
	}
	if fw.buf.Len() != n {
		t.Errorf("wrote %d more bytes after a failure", fw.buf.Len()-n)
	}

	// A short write without an error is an error too.
	w, err = recorder.NewWriter(shortWriter{}, recorder.Header{Width: 1, Height: 1}, time.Time{}, nil)
	if err == nil || !strings.Contains(err.Error(), "short write") {
		t.Errorf("NewWriter on a short writer: %v, %v", w, err)
	}
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

func TestWriterClosedAndBadArguments(t *testing.T) {
	var buf bytes.Buffer
	w, err := recorder.NewWriter(&buf, testHeader, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"resize zero", func() error { return w.Resize(0, 24) }},
		{"resize huge", func() error { return w.Resize(80, 1<<20) }},
		{"marker too long", func() error { return w.Marker(strings.Repeat("m", 4<<10+1)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil {
				t.Error("accepted")
			}
		})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"output": func() error { return w.Output([]byte("x")) },
		"input":  func() error { return w.Input([]byte("x")) },
		"resize": func() error { return w.Resize(1, 1) },
		"marker": func() error { return w.Marker("x") },
		"close":  w.Close,
	} {
		if err := call(); !errors.Is(err, recorder.ErrClosed) {
			t.Errorf("%s after Close: %v, want recorder.ErrClosed", name, err)
		}
	}
}

// A clock that steps back never makes event times go backwards.
func TestWriterTimesNeverDecrease(t *testing.T) {
	base := time.Unix(1700000000, 0)
	times := []time.Duration{time.Second, 3 * time.Second, 2 * time.Second, -time.Hour, 4 * time.Second}
	i := 0
	now := func() time.Time { d := times[i]; i++; return base.Add(d) }
	var buf bytes.Buffer
	w, err := recorder.NewWriter(&buf, testHeader, base, now)
	if err != nil {
		t.Fatal(err)
	}
	for range times {
		if err := w.Output([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	_, evs := recordertest.MustParseCast(t, buf.Bytes()) // the recorder.Reader refuses decreasing times
	want := []float64{1, 3, 3, 3, 4}
	for i, e := range evs {
		if e.Time != want[i] {
			t.Errorf("event %d at %v, want %v", i, e.Time, want[i])
		}
	}
}

// TestOutputCRLF: output of a session without a terminal is recorded with
// a CR before every LF (as a terminal with onlcr shows it), so that
// players draw lines instead of a staircase; ExactOutput gives back the
// bytes sent, also when they held CR LF already or a LF split from its
// line by the read, and the rest of the cast is untouched.
func TestOutputCRLF(t *testing.T) {
	var buf bytes.Buffer
	w, err := recorder.NewWriter(&buf, recorder.Header{Width: 80, Height: 24}, time.Unix(0, 0), func() time.Time { return time.Unix(1, 0) })
	if err != nil {
		t.Fatal(err)
	}
	w.SetOutputCRLF(true)
	sent := []string{"line 1\nline 2\n", "already crlf\r\n", "no newline", "\n", "\n\nünïcode ✓\n"}
	for _, p := range sent {
		if err := w.Output([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Input([]byte("typed\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, evs := recordertest.MustParseCast(t, buf.Bytes())
	got := recordertest.Data(evs, recorder.CodeOutput)
	want := "line 1\r\nline 2\r\nalready crlf\r\r\nno newline\r\n\r\n\r\nünïcode ✓\r\n"
	if got != want {
		t.Errorf("cast output %q, want %q", got, want)
	}
	if in := recordertest.Data(evs, recorder.CodeInput); in != "typed\n" {
		t.Errorf("input %q: only output is translated", in)
	}
	m := recorder.Metadata{OutputNewlines: recorder.NewlinesCRLF}
	if exact := string(recorder.ExactOutput(m, []byte(got))); exact != strings.Join(sent, "") {
		t.Errorf("ExactOutput = %q, want %q", exact, strings.Join(sent, ""))
	}
	if exact := string(recorder.ExactOutput(recorder.Metadata{}, []byte(got))); exact != got {
		t.Errorf("ExactOutput of a terminal session changed its output")
	}
}
