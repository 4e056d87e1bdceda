package recorder

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// maxEventData bounds the escaped data of one event line. Output larger than
// this becomes several events with the same time, cut at rune boundaries, so
// that every line stays far below MaxLineBytes and the line buffer a session
// keeps stays small.
const maxEventData = 64 << 10

// maxMarker bounds a marker label; markers are never split.
const maxMarker = 4 << 10

// Writer encodes a terminal session as asciicast v2. It is safe for
// concurrent use: every event is encoded under one lock and handed to the
// underlying writer as one whole line in a single Write call, so lines never
// interleave and a crash leaves at most a partial last line.
//
// Output and Input carry an incomplete trailing UTF-8 sequence over to their
// next call, each in its own buffer: JSON can only hold valid UTF-8, and
// encoding a rune split across two reads would turn both halves into U+FFFD.
// Bytes that can never become valid UTF-8 are replaced by U+FFFD, one per run
// of invalid bytes (the rule of strings.ToValidUTF8), also across calls.
type Writer struct {
	now   func() time.Time
	start time.Time

	mu      sync.Mutex // guards the fields below and serialises writes to w
	w       io.Writer
	last    float64 // time of the last event; times never go backwards
	out, in carry
	buf     []byte // line being encoded, reused between events
	joined  []byte // carry + input, reused
	err     error  // first write error; sticky, since a failed write may have left a partial line
	closed  bool

	// Redaction state of output and input; nil: no redaction.
	redOut, redIn *redactor

	crlf    bool   // output LF is recorded as CR LF (SetOutputCRLF)
	crlfBuf []byte // output with CRs added, reused

	// blob, when set (SetBlob), takes the output a cast cannot hold
	// faithfully; output goes through outLocked (blob_writer.go).
	blob *blobState
}

// carry is the UTF-8 state of one stream (output or input).
type carry struct {
	b       [utf8.UTFMax - 1]byte // incomplete rune at the end of the last call
	n       int
	invalid bool // the last data written was U+FFFD for an invalid run
}

// NewWriter writes the header h to w and returns a Writer whose event times
// count from start. A zero h.Version means Version; a zero h.Timestamp means
// start; a zero start means now(); a nil now means time.Now.
func NewWriter(w io.Writer, h Header, start time.Time, now func() time.Time) (*Writer, error) {
	if now == nil {
		now = time.Now
	}
	if start.IsZero() {
		start = now()
	}
	if h.Version == 0 {
		h.Version = Version
	}
	if h.Timestamp == 0 {
		h.Timestamp = start.Unix()
	}
	if err := h.Check(); err != nil {
		return nil, err
	}
	line, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("recorder: encode header: %w", err)
	}
	line = append(line, '\n')
	if err := writeAll(w, line); err != nil {
		return nil, fmt.Errorf("recorder: write header: %w", err)
	}
	return &Writer{w: w, start: start, now: now}, nil
}

// SetRedaction makes the Writer replace matches of rd's patterns in output
// and input by "[REDACTED:name]" before they are encoded (see Redaction);
// nil turns redaction off. Call it before the first event.
func (w *Writer) SetRedaction(rd *Redaction) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.redOut, w.redIn = nil, nil
	if rd != nil && len(rd.pats) > 0 {
		w.redOut, w.redIn = newRedactor(rd), newRedactor(rd)
	}
}

// SetOutputCRLF makes the Writer record every LF of the output as CR LF,
// as a terminal with onlcr shows output (Metadata.OutputNewlines
// NewlinesCRLF): for sessions without a terminal, whose output carries
// bare LFs that players would draw as a staircase. Call it before the
// first event.
func (w *Writer) SetOutputCRLF(on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.crlf = on
}

// Output records p as terminal output ("o").
func (w *Writer) Output(p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return err
	}
	if w.redOut != nil {
		p = w.redOut.write(p, false)
	}
	return w.outLocked(p, false, false)
}

// Input records p as user input ("i").
func (w *Writer) Input(p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return err
	}
	if w.redIn != nil {
		p = w.redIn.write(p, false)
	}
	return w.streamLocked(CodeInput, &w.in, p, false)
}

// TickRedaction applies the redaction flush rule (Redaction): bytes held
// back as a possible secret since the last tick are decided now. The spool
// calls it every FlushInterval.
func (w *Writer) TickRedaction() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil || w.redOut == nil {
		return err
	}
	if b := w.redOut.tick(); len(b) > 0 {
		if err := w.outLocked(b, false, true); err != nil {
			return err
		}
	}
	if b := w.redIn.tick(); len(b) > 0 {
		return w.streamLocked(CodeInput, &w.in, b, false)
	}
	return nil
}

// Resize records a terminal size change ("r", "COLSxROWS").
func (w *Writer) Resize(cols, rows int) error {
	if cols <= 0 || rows <= 0 || cols > maxTermSize || rows > maxTermSize {
		return fmt.Errorf("recorder: resize %dx%d: out of range 1..%d", cols, rows, maxTermSize)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return err
	}
	data := strconv.Itoa(cols) + "x" + strconv.Itoa(rows)
	return w.eventLocked(CodeResize, data)
}

// Marker records a marker ("m") labelled label. Invalid UTF-8 in label is
// replaced by U+FFFD. Labels longer than 4 KiB are refused.
func (w *Writer) Marker(label string) error {
	if len(label) > maxMarker {
		return fmt.Errorf("recorder: marker of %d bytes: longer than %d", len(label), maxMarker)
	}
	if strings.HasPrefix(label, BlobLabelPrefix) || strings.HasPrefix(label, DroppedLabelPrefix) {
		// Only the Writer references the blob (blob.go) and says what
		// was dropped (dropped.go).
		label = "marker " + label
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return err
	}
	return w.eventLocked(CodeMarker, label)
}

// Close writes out the bytes still carried (as U+FFFD: the session ended in
// the middle of a rune) and makes every later call fail with ErrClosed. It
// does not close the underlying writer. It returns the first write error.
func (w *Writer) Close() error {
	return w.finish("")
}

// finish is Close that writes a last marker after the carried bytes.
func (w *Writer) finish(marker string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	var outTail, inTail []byte
	if w.redOut != nil {
		outTail, inTail = w.redOut.write(nil, true), w.redIn.write(nil, true)
	}
	if w.err == nil {
		_ = w.outLocked(outTail, true, true)
	}
	if w.err == nil {
		_ = w.streamLocked(CodeInput, &w.in, inTail, true)
	}
	if w.err == nil && marker != "" {
		_ = w.eventLocked(CodeMarker, marker)
	}
	w.closed = true
	return w.err
}

func (w *Writer) usableLocked() error {
	if w.closed {
		return ErrClosed
	}
	return w.err
}

// elapsedLocked is the time of a new event: seconds since start, never less
// than the previous event's (an injected or wall clock may step back).
func (w *Writer) elapsedLocked() float64 {
	t := w.now().Sub(w.start).Seconds()
	if t < w.last {
		t = w.last
	}
	w.last = t
	return t
}

func (w *Writer) lineStartLocked(t float64, code string) []byte {
	b := append(w.buf[:0], '[')
	b = strconv.AppendFloat(b, t, 'f', 6, 64)
	b = append(b, ", \""...)
	b = append(b, code...)
	return append(b, "\", \""...)
}

// writeLineLocked ends the line in b and writes it in one call.
func (w *Writer) writeLineLocked(b []byte) error {
	b = append(b, "\"]\n"...)
	err := writeAll(w.w, b)
	// Keep the buffer for the next event unless one burst made it large:
	// an idle session should hold kilobytes, not a burst's worth.
	if cap(b) <= 2*maxEventData {
		w.buf = b[:0]
	} else {
		w.buf = nil
	}
	if err != nil {
		w.err = fmt.Errorf("recorder: write event: %w", err)
		return w.err
	}
	return nil
}

func (w *Writer) eventLocked(code, data string) error {
	st := carry{}
	b := w.lineStartLocked(w.elapsedLocked(), code)
	b, _ = appendEscaped(b, []byte(data), &st, true, len(data)*6+utf8.UTFMax)
	return w.writeLineLocked(b)
}

// streamLocked records p (after the bytes carried in c) as events of code,
// carrying an incomplete last rune unless final.
func (w *Writer) streamLocked(code string, c *carry, p []byte, final bool) error {
	if err := w.usableLocked(); err != nil {
		return err
	}
	if w.crlf && code == CodeOutput {
		p = w.addCRs(p)
	}
	s := p
	if c.n > 0 {
		w.joined = append(append(w.joined[:0], c.b[:c.n]...), p...)
		s = w.joined
		c.n = 0
	}
	if len(s) == 0 {
		return nil
	}
	t := w.elapsedLocked()
	for len(s) > 0 {
		b := w.lineStartLocked(t, code)
		head := len(b)
		b, n := appendEscaped(b, s, c, final, maxEventData)
		s = s[n:]
		if len(b) > head {
			if err := w.writeLineLocked(b); err != nil {
				return err
			}
		} else {
			w.buf = b[:0]
		}
		if len(s) > 0 && len(b)-head < maxEventData {
			// Stopped before the limit: an incomplete rune at the end.
			c.n = copy(c.b[:], s)
			break
		}
	}
	if cap(w.joined) > 2*maxEventData {
		w.joined = nil
	}
	return nil
}

// addCRs returns p with a CR before every LF, in a buffer of w's (p itself
// when it has no LF).
func (w *Writer) addCRs(p []byte) []byte {
	n := bytes.Count(p, []byte{'\n'})
	if n == 0 {
		return p
	}
	b := slices.Grow(w.crlfBuf[:0], len(p)+n)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			break
		}
		b = append(append(b, p[:i]...), '\r', '\n')
		p = p[i+1:]
	}
	b = append(b, p...)
	if cap(b) <= 2*maxEventData {
		w.crlfBuf = b
	} else {
		w.crlfBuf = nil
	}
	return b
}

// writeAll writes p in one Write call; a short write without an error is
// still an error (io.Writer contract).
func writeAll(w io.Writer, p []byte) error {
	n, err := w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return err
}
