package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/sshward/sshward/recorder"
)

// The terminal player of `sshward play`: it writes a recording's output
// events to the terminal at their recorded pace (asciicast v2 times, scaled
// by --speed, pauses cut by --idle-limit). The timing lives in timeline and
// playhead, which take the clock as an argument so tests drive them with a
// fake one; termPlayer only connects them to the network, the keys and the
// screen.

// frame is one output event placed on the player's timeline.
type frame struct {
	at   float64 // seconds on the timeline: recording time with idle gaps cut
	data string
}

// timeline holds the frames read so far. A live session keeps growing.
type timeline struct {
	idle   float64 // longest gap kept, in seconds; 0 keeps every gap
	frames []frame
	last   float64 // recording time of the last event added
	at     float64 // timeline time of the last event added
}

// add places event e on the timeline. Every event counts for the idle
// limit (as in asciinema), only output is drawn: input is echoed in the
// output already, markers and resizes are not terminal bytes.
func (tl *timeline) add(e recorder.Event) {
	gap := max(e.Time-tl.last, 0)
	if tl.idle > 0 && gap > tl.idle {
		gap = tl.idle
	}
	tl.at += gap
	tl.last = e.Time
	if e.Code == recorder.CodeOutput && e.Data != "" {
		tl.frames = append(tl.frames, frame{at: tl.at, data: e.Data})
	}
}

// end is the time of the last frame.
func (tl *timeline) end() float64 {
	if len(tl.frames) == 0 {
		return 0
	}
	return tl.frames[len(tl.frames)-1].at
}

// playhead is where playback stands: a timeline position that advances
// with the wall clock at speed unless paused, and the next frame to draw.
type playhead struct {
	speed  float64
	pos    float64   // timeline position at ref
	ref    time.Time // wall time at which pos held
	paused bool
	next   int // index of the first frame not drawn yet
}

func newPlayhead(speed float64, now time.Time) *playhead {
	return &playhead{speed: speed, ref: now}
}

// position is the timeline time at wall time now.
func (p *playhead) position(now time.Time) float64 {
	if p.paused {
		return p.pos
	}
	return p.pos + now.Sub(p.ref).Seconds()*p.speed
}

// due returns the frames to draw at now and marks them drawn.
func (p *playhead) due(tl *timeline, now time.Time) []frame {
	at := p.position(now)
	start := p.next
	for p.next < len(tl.frames) && tl.frames[p.next].at <= at {
		p.next++
	}
	return tl.frames[start:p.next]
}

// wait is how long until the next frame is due; ok is false when nothing is
// scheduled (paused, or every frame read so far is drawn).
func (p *playhead) wait(tl *timeline, now time.Time) (d time.Duration, ok bool) {
	if p.paused || p.next >= len(tl.frames) {
		return 0, false
	}
	ahead := tl.frames[p.next].at - p.position(now)
	if ahead <= 0 {
		return 0, true
	}
	return time.Duration(ahead / p.speed * float64(time.Second)), true
}

// caughtUp reports whether every frame read so far has been drawn; a
// playhead that ran past the last frame of a live session holds there, so
// the frames that arrive next play at their pace from then on.
func (p *playhead) caughtUp(tl *timeline, now time.Time) {
	if p.next >= len(tl.frames) && !p.paused && p.position(now) > tl.end() {
		p.pos, p.ref = tl.end(), now
	}
}

// togglePause pauses or resumes at now.
func (p *playhead) togglePause(now time.Time) {
	p.pos, p.ref = p.position(now), now
	p.paused = !p.paused
}

// seek moves by delta seconds of timeline, within [0, end]. Going back means
// the screen must be redrawn from the first frame: seek then returns true and
// the next due() returns every frame up to the new position.
func (p *playhead) seek(tl *timeline, now time.Time, delta float64) (redraw bool) {
	to := min(max(p.position(now)+delta, 0), tl.end())
	p.pos, p.ref = to, now
	if delta < 0 {
		p.next = 0
		return true
	}
	return false
}

// key is a player command typed at the terminal.
type key int

const (
	keyQuit key = iota + 1
	keyPause
	keyForward
	keyBack
)

// seekStep is what → and ← move.
const seekStep = 5.0

// keyParser turns raw terminal input into keys. Arrow keys arrive as
// ESC [ C / ESC [ D (or ESC O C in application cursor mode) and may be split
// across reads, so the parser keeps the bytes of an unfinished sequence.
type keyParser struct {
	pending []byte
}

func (kp *keyParser) feed(b []byte) []key {
	var out []key
	buf := append(kp.pending, b...)
	kp.pending = nil
	for i := 0; i < len(buf); i++ {
		switch c := buf[i]; c {
		case 'q', 'Q', 0x03, 0x04: // q, Ctrl-C, Ctrl-D (raw mode: no signals)
			out = append(out, keyQuit)
		case ' ', 'p':
			out = append(out, keyPause)
		case 0x1b:
			if i+1 < len(buf) && buf[i+1] != '[' && buf[i+1] != 'O' {
				continue // a lone ESC: the next byte is a key of its own
			}
			if i+2 >= len(buf) {
				kp.pending = append([]byte(nil), buf[i:]...)
				return out
			}
			switch buf[i+2] {
			case 'C':
				out = append(out, keyForward)
			case 'D':
				out = append(out, keyBack)
			}
			i += 2
		}
	}
	return out
}

// termPlayer plays one recording to out.
type termPlayer struct {
	out   io.Writer
	now   func() time.Time
	speed float64
	idle  float64
	// tty: out is a terminal; the screen is cleared first and redrawn on a
	// backward seek. keys: commands typed at the terminal (nil: none).
	tty  bool
	keys <-chan key
	// onRead, if set, runs once the whole recording has been read and
	// handed to the timeline (tests synchronise on it).
	onRead func()
}

// feed is the timeline shared with the goroutine that reads the recording.
type feed struct {
	mu   sync.Mutex // guards tl, done, err
	tl   timeline
	done bool
	err  error
	more chan struct{} // capacity 1: "the timeline grew or ended"
}

// read fills f from body until the recording ends (a live one ends when
// the session does) or ctx is done. Events are handed over in batches, and
// whenever reading would wait for the network, so a live session's newest
// output shows at once.
func (f *feed) read(ctx context.Context, body io.Reader) {
	const batch = 256
	evs := make([]recorder.Event, 0, batch)
	flush := func(done bool, err error) {
		f.mu.Lock()
		for _, e := range evs {
			f.tl.add(e)
		}
		if done {
			f.done, f.err = true, err
		}
		f.mu.Unlock()
		evs = evs[:0]
		select {
		case f.more <- struct{}{}:
		default:
		}
	}
	rd, err := recorder.NewReader(readerFunc(func(p []byte) (int, error) {
		if len(evs) > 0 {
			flush(false, nil)
		}
		return body.Read(p)
	}))
	if err != nil {
		flush(true, err)
		return
	}
	for ctx.Err() == nil {
		e, err := rd.Next()
		if err == io.EOF {
			flush(true, nil)
			return
		}
		if err != nil {
			flush(true, err)
			return
		}
		if evs = append(evs, e); len(evs) == batch {
			flush(false, nil)
		}
	}
}

// readerFunc is an io.Reader made of a func.
type readerFunc func(p []byte) (int, error)

func (r readerFunc) Read(p []byte) (int, error) { return r(p) }

// resetScreen clears the screen and puts the cursor home; fullReset also
// ends whatever modes a recording switched on (alternate screen, colours),
// for a redraw from the first frame.
const (
	resetScreen = "\x1b[H\x1b[2J"
	fullReset   = "\x1bc"
	// leave restores what a recording may have hidden or coloured.
	leave = "\x1b[0m\x1b[?25h\r\n"
)

// play draws the output of the asciicast in body until it ends, ctx is
// done or the viewer quits.
func (p *termPlayer) play(ctx context.Context, body io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := &feed{tl: timeline{idle: p.idle}, more: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.read(ctx, body)
		if p.onRead != nil {
			p.onRead()
		}
	}()
	defer func() {
		cancel()
		<-done
	}()

	w := bufio.NewWriterSize(p.out, 64<<10)
	defer w.Flush()
	if p.tty {
		w.WriteString(resetScreen)
		defer w.WriteString(leave)
	}
	ph := newPlayhead(p.speed, p.now())
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := p.now()
		f.mu.Lock()
		for _, fr := range ph.due(&f.tl, now) {
			w.WriteString(fr.data)
		}
		ph.caughtUp(&f.tl, now)
		wait, scheduled := ph.wait(&f.tl, now)
		finished, readErr := f.done && ph.next >= len(f.tl.frames), f.err
		f.mu.Unlock()
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write the recording: %w", err)
		}
		if finished {
			if readErr != nil {
				return fmt.Errorf("cannot read the recording (%v): sshward export ID saves it as it is", readErr)
			}
			return nil
		}
		var tick <-chan time.Time
		if scheduled {
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick:
		case <-f.more:
		case k, ok := <-p.keys:
			if !ok {
				p.keys = nil
				continue
			}
			now := p.now()
			f.mu.Lock()
			switch k {
			case keyQuit:
				f.mu.Unlock()
				return nil
			case keyPause:
				ph.togglePause(now)
			case keyForward:
				ph.seek(&f.tl, now, seekStep)
			case keyBack:
				if ph.seek(&f.tl, now, -seekStep) {
					w.WriteString(fullReset)
				}
			}
			f.mu.Unlock()
		}
		// Since Go 1.23 a stopped timer never delivers a stale tick.
		timer.Stop()
	}
}

// rawTerminal puts the terminal in raw mode so single keys reach the player
// unechoed; the returned func restores it.
func rawTerminal(f *os.File) (restore func(), err error) {
	st, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("cannot read keys from the terminal (%v): pipe the output (sshward play ID | cat) to play without keys", err)
	}
	return func() { term.Restore(int(f.Fd()), st) }, nil
}

// readKeys reads keys from the terminal. The goroutine blocks in Read on the
// terminal, which cannot be interrupted portably; it ends with the process
// (play is the last thing the command does) or when the terminal closes.
func readKeys(r io.Reader) <-chan key {
	ch := make(chan key, 16)
	go func() {
		defer close(ch)
		var kp keyParser
		buf := make([]byte, 64)
		for {
			n, err := r.Read(buf)
			for _, k := range kp.feed(buf[:n]) {
				ch <- k
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}
