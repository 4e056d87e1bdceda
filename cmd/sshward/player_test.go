package main

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
)

// events builds a timeline from (time, code, data) triples.
func buildTimeline(idle float64, evs ...recorder.Event) *timeline {
	tl := &timeline{idle: idle}
	for _, e := range evs {
		tl.add(e)
	}
	return tl
}

func out(t float64, data string) recorder.Event {
	return recorder.Event{Time: t, Code: recorder.CodeOutput, Data: data}
}

func frameTimes(tl *timeline) []float64 {
	var ts []float64
	for _, f := range tl.frames {
		ts = append(ts, f.at)
	}
	return ts
}

func TestTimelineIdleLimit(t *testing.T) {
	evs := []recorder.Event{
		out(0.5, "a"),
		{Time: 1, Code: recorder.CodeInput, Data: "x"},
		out(31, "b"), // 30 s of nothing
		{Time: 32, Code: recorder.CodeMarker, Data: "m"},
		{Time: 33, Code: recorder.CodeResize, Data: "100x30"},
		out(33.25, "c"),
		out(3633.25, "d"), // an hour later
	}
	tests := []struct {
		name string
		idle float64
		want []float64
	}{
		{"no limit keeps every gap", 0, []float64{0.5, 31, 33.25, 3633.25}},
		{"limit 2 s cuts the long gaps", 2, []float64{0.5, 3, 5.25, 7.25}},
		{"limit larger than every gap changes nothing", 4000, []float64{0.5, 31, 33.25, 3633.25}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := buildTimeline(tt.idle, evs...)
			if got := frameTimes(tl); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("frame times %v, want %v", got, tt.want)
			}
			var data string
			for _, f := range tl.frames {
				data += f.data
			}
			if data != "abcd" {
				t.Errorf("frames carry %q, want only the output abcd", data)
			}
		})
	}
}

// fakeClock is the injected clock: tests move it by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func drawn(fs []frame) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.data)
	}
	return b.String()
}

func TestPlayheadTiming(t *testing.T) {
	tl := buildTimeline(0, out(0, "0"), out(1, "1"), out(2, "2"), out(10, "A"), out(12, "B"))
	type step struct {
		do       string // "wait D", "pause", "seek +N"/"seek -N"
		d        time.Duration
		delta    float64
		drawn    string  // frames due after the step
		redraw   bool    // seek answered "redraw from the start"
		nextWait float64 // seconds until the next frame; -1: nothing scheduled
	}
	tests := []struct {
		name  string
		speed float64
		steps []step
	}{
		{"real time", 1, []step{
			{do: "wait", drawn: "0", nextWait: 1},
			{do: "wait", d: 999 * time.Millisecond, drawn: "", nextWait: 0.001},
			{do: "wait", d: time.Millisecond, drawn: "1", nextWait: 1},
			{do: "wait", d: 9 * time.Second, drawn: "2A", nextWait: 2},
			{do: "wait", d: 2 * time.Second, drawn: "B", nextWait: -1},
		}},
		{"twice as fast", 2, []step{
			{do: "wait", drawn: "0", nextWait: 0.5},
			{do: "wait", d: 500 * time.Millisecond, drawn: "1", nextWait: 0.5},
			{do: "wait", d: 4 * time.Second, drawn: "2", nextWait: 0.5},
			{do: "wait", d: 500 * time.Millisecond, drawn: "A", nextWait: 1},
		}},
		{"pause holds the position", 1, []step{
			{do: "wait", d: 1500 * time.Millisecond, drawn: "01", nextWait: 0.5},
			{do: "pause", drawn: "", nextWait: -1},
			{do: "wait", d: time.Hour, drawn: "", nextWait: -1},
			{do: "pause", drawn: "", nextWait: 0.5},
			{do: "wait", d: 500 * time.Millisecond, drawn: "2", nextWait: 8},
		}},
		{"seek forward draws what it skips", 1, []step{
			{do: "wait", d: 2 * time.Second, drawn: "012", nextWait: 8},
			{do: "seek", delta: 5, drawn: "", nextWait: 3},
			{do: "seek", delta: 5, drawn: "AB", nextWait: -1}, // 12 is the end: clamped
			{do: "seek", delta: 5, drawn: "", nextWait: -1},
		}},
		{"seek back redraws from the first frame", 1, []step{
			{do: "wait", d: 11 * time.Second, drawn: "012A", nextWait: 1},
			{do: "seek", delta: -5, drawn: "012", redraw: true, nextWait: 4},
			{do: "seek", delta: -5, drawn: "01", redraw: true, nextWait: 1},
			{do: "wait", d: time.Second, drawn: "2", nextWait: 8},
			{do: "seek", delta: -5, drawn: "0", redraw: true, nextWait: 1}, // clamped at 0
		}},
		{"seek while paused stays paused", 1, []step{
			{do: "pause", drawn: "0", nextWait: -1}, // a frame at 0 shows even paused
			{do: "seek", delta: 5, drawn: "12", nextWait: -1},
			{do: "wait", d: time.Minute, drawn: "", nextWait: -1},
			{do: "pause", drawn: "", nextWait: 5},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)}
			ph := newPlayhead(tt.speed, clk.now())
			for i, s := range tt.steps {
				redraw := false
				switch s.do {
				case "wait":
					clk.advance(s.d)
				case "pause":
					ph.togglePause(clk.now())
				case "seek":
					redraw = ph.seek(tl, clk.now(), s.delta)
				}
				if got := drawn(ph.due(tl, clk.now())); got != s.drawn {
					t.Fatalf("step %d (%s %v%+v): drew %q, want %q", i, s.do, s.d, s.delta, got, s.drawn)
				}
				if redraw != s.redraw {
					t.Fatalf("step %d: redraw %v, want %v", i, redraw, s.redraw)
				}
				d, ok := ph.wait(tl, clk.now())
				got := -1.0
				if ok {
					got = d.Seconds()
				}
				if diff := got - s.nextWait; diff > 1e-6 || diff < -1e-6 {
					t.Fatalf("step %d: next frame in %v s, want %v", i, got, s.nextWait)
				}
			}
		})
	}
}

// TestPlayheadLiveCatchUp: a live session's next output plays at its pace
// after the last one, not at once because the wall clock ran on meanwhile.
func TestPlayheadLiveCatchUp(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	tl := buildTimeline(0, out(1, "a"))
	ph := newPlayhead(1, clk.now())
	clk.advance(time.Second)
	if got := drawn(ph.due(tl, clk.now())); got != "a" {
		t.Fatalf("drew %q", got)
	}
	clk.advance(30 * time.Second) // waiting for the session to print more
	ph.caughtUp(tl, clk.now())
	tl.add(out(3, "b")) // arrives now, 2 s after "a" in recording time
	if got := drawn(ph.due(tl, clk.now())); got != "" {
		t.Fatalf("drew %q before its time", got)
	}
	if d, ok := ph.wait(tl, clk.now()); !ok || d != 2*time.Second {
		t.Fatalf("wait %v %v, want 2s", d, ok)
	}
}

func TestKeyParser(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []key
	}{
		{"quit", []string{"q"}, []key{keyQuit}},
		{"ctrl-c quits in raw mode", []string{"\x03"}, []key{keyQuit}},
		{"space pauses", []string{"  "}, []key{keyPause, keyPause}},
		{"arrows", []string{"\x1b[C\x1b[D"}, []key{keyForward, keyBack}},
		{"application cursor arrows", []string{"\x1bOC\x1bOD"}, []key{keyForward, keyBack}},
		{"arrow split across reads", []string{"\x1b", "[", "D"}, []key{keyBack}},
		{"arrow split after the bracket", []string{" \x1b[", "Cq"}, []key{keyPause, keyForward, keyQuit}},
		{"up and down do nothing", []string{"\x1b[A\x1b[B"}, nil},
		{"lone escape then a key", []string{"\x1bx", "q"}, []key{keyQuit}},
		{"other letters do nothing", []string{"abc"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var kp keyParser
			var got []key
			for _, c := range tt.chunks {
				got = append(got, kp.feed([]byte(c))...)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("keys %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzKeyParser(f *testing.F) {
	for _, s := range []string{"q", "\x1b[C", "\x1b", "\x1bO", " \x1b[D\x1b[", "\x1b\x1b[C"} {
		f.Add([]byte(s), 1)
	}
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		// Whatever the bytes and however reads split them, the parser
		// keeps at most an unfinished escape sequence and finds the same
		// keys as in one read.
		var whole keyParser
		want := whole.feed(b)
		var kp keyParser
		var got []key
		if split < 1 {
			split = 1
		}
		for i := 0; i < len(b); i += split {
			got = append(got, kp.feed(b[i:min(i+split, len(b))])...)
			if len(kp.pending) > 2 {
				t.Fatalf("pending %q", kp.pending)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("split reads gave %v, one read %v", got, want)
		}
	})
}

// TestPlayerRunsAtItsPace runs the whole player on a cast whose pauses add
// up to an hour: with --idle-limit and --speed it must finish at once, draw
// every output byte in order and nothing else.
func TestPlayerRunsAtItsPace(t *testing.T) {
	cast := `{"version":2,"width":80,"height":24}` + "\n" +
		`[0.1,"o","one\r\n"]` + "\n" +
		`[0.2,"i","ls\r"]` + "\n" +
		`[1800,"m","half an hour later"]` + "\n" +
		`[1800.5,"o","two\r\n"]` + "\n" +
		`[3600.5,"o","three\r\n"]` + "\n"
	tests := []struct {
		name        string
		speed, idle float64
		tty         bool
		want        string
	}{
		{"idle limit", 1, 0.01, false, "one\r\ntwo\r\nthree\r\n"},
		{"speed", 1e6, 0, false, "one\r\ntwo\r\nthree\r\n"},
		{"tty clears first and restores after", 1, 0.01, true, resetScreen + "one\r\ntwo\r\nthree\r\n" + leave},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			p := &termPlayer{out: &buf, now: time.Now, speed: tt.speed, idle: tt.idle, tty: tt.tty}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.play(ctx, strings.NewReader(cast)); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want {
				t.Fatalf("drew %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

func TestPlayerKeys(t *testing.T) {
	t.Run("seek and quit", testPlayerSeekQuit)
	t.Run("forward to the end finishes", func(t *testing.T) {
		cast := `{"version":2,"width":80,"height":24}` + "\n" + `[0,"o","a"]` + "\n" + `[100,"o","b"]` + "\n"
		keys := make(chan key, 32)
		var buf bytes.Buffer
		read := make(chan struct{})
		p := &termPlayer{out: &buf, now: time.Now, speed: 1, keys: keys, onRead: func() { close(read) }}
		done := make(chan error, 1)
		go func() { done <- p.play(context.Background(), strings.NewReader(cast)) }()
		<-read
		for range 20 {
			keys <- keyForward
		}
		if err := <-done; err != nil || buf.String() != "ab" {
			t.Fatalf("drew %q, err %v", buf.String(), err)
		}
	})
}

func testPlayerSeekQuit(t *testing.T) {
	cast := `{"version":2,"width":80,"height":24}` + "\n" +
		`[0,"o","start\r\n"]` + "\n" +
		`[100,"o","later\r\n"]` + "\n"
	keys := make(chan key, 32)
	var buf bytes.Buffer
	read := make(chan struct{})
	p := &termPlayer{out: &buf, now: time.Now, speed: 1, tty: true, keys: keys, onRead: func() { close(read) }}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.play(ctx, strings.NewReader(cast)) }()
	// Without keys this takes 100 s; → 19 times gets to 95 s, ← redraws
	// from the start up to 90 s, q quits before "later" is due.
	<-read
	for range 19 {
		keys <- keyForward
	}
	keys <- keyBack
	keys <- keyQuit
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	want := resetScreen + "start\r\n" + fullReset + "start\r\n" + leave
	if got != want {
		t.Fatalf("drew %q, want %q", got, want)
	}
}

func TestPlayerDamagedCast(t *testing.T) {
	var buf bytes.Buffer
	p := &termPlayer{out: &buf, now: time.Now, speed: 1000}
	err := p.play(context.Background(), strings.NewReader(`{"version":2,"width":80,"height":24}`+"\n"+`[0,"o","ok\r\n"]`+"\nnot json\n"))
	if err == nil || !strings.Contains(err.Error(), "sshward export") {
		t.Fatalf("err = %v", err)
	}
	if buf.String() != "ok\r\n" {
		t.Errorf("drew %q before the damage", buf.String())
	}
}
