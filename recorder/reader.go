package recorder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// Reader reads an asciicast v2 file strictly: the header must be a version 2
// object with a positive size; every later line must be exactly
// [time, code, data] with a finite, non-negative time that never decreases,
// a known code and, for "r", "COLSxROWS". Blank lines are refused (Debian's
// asciinema 2.2 crashes on them), as are lines longer than MaxLineBytes.
// A last line without '\n' is read if it is whole. Unknown header fields
// (idle_time_limit, theme, …) are ignored.
type Reader struct {
	br   *bufio.Reader
	h    Header
	line int     // number of the last line read, 1-based
	last float64 // time of the last event
	err  error   // sticky: a reader that failed once stays failed
}

// NewReader reads the header from r.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{br: bufio.NewReaderSize(r, 64<<10)}
	line, err := rd.readLine()
	if err == io.EOF {
		return nil, fmt.Errorf("recorder: read header: empty file: %w", ErrMalformed)
	}
	if err != nil {
		return nil, err
	}
	if len(line) == 0 || line[0] != '{' {
		return nil, fmt.Errorf("recorder: read header: not a JSON object: %w", ErrMalformed)
	}
	if err := json.Unmarshal(line, &rd.h); err != nil {
		return nil, fmt.Errorf("recorder: read header: %w: %v", ErrMalformed, err)
	}
	if err := rd.h.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrMalformed)
	}
	return rd, nil
}

// Header returns the header read by NewReader.
func (rd *Reader) Header() Header { return rd.h }

// Next returns the next event, or io.EOF after the last one.
func (rd *Reader) Next() (Event, error) {
	if rd.err != nil {
		return Event{}, rd.err
	}
	e, err := rd.next()
	if err != nil {
		rd.err = err
	}
	return e, err
}

func (rd *Reader) next() (Event, error) {
	line, err := rd.readLine()
	if err != nil {
		return Event{}, err
	}
	bad := func(why string) error {
		return fmt.Errorf("recorder: read line %d: %s: %w", rd.line, why, ErrMalformed)
	}
	var parts []json.RawMessage
	if len(line) == 0 || line[0] != '[' || json.Unmarshal(line, &parts) != nil {
		return Event{}, bad("not a JSON array")
	}
	if len(parts) != 3 {
		return Event{}, bad(fmt.Sprintf("%d elements, want 3", len(parts)))
	}
	var e Event
	// Unmarshal accepts null for any type; a leading byte check refuses it.
	if c := parts[0][0]; (c < '0' || c > '9') && c != '-' || json.Unmarshal(parts[0], &e.Time) != nil {
		return Event{}, bad("time is not a number")
	}
	if parts[1][0] != '"' || json.Unmarshal(parts[1], &e.Code) != nil {
		return Event{}, bad("code is not a string")
	}
	if parts[2][0] != '"' || json.Unmarshal(parts[2], &e.Data) != nil {
		return Event{}, bad("data is not a string")
	}
	switch {
	case math.IsNaN(e.Time) || math.IsInf(e.Time, 0) || e.Time < 0:
		return Event{}, bad("negative time")
	case e.Time < rd.last:
		return Event{}, bad("time goes backwards")
	}
	switch e.Code {
	case CodeOutput, CodeInput, CodeMarker, CodeExit:
	case CodeResize:
		if _, _, err := parseSize(e.Data); err != nil {
			return Event{}, bad("resize is not COLSxROWS")
		}
	default:
		return Event{}, bad(fmt.Sprintf("unknown code %q", e.Code))
	}
	rd.last = e.Time
	return e, nil
}

// readLine returns the next line without its '\n'; io.EOF at the end.
func (rd *Reader) readLine() ([]byte, error) {
	var line []byte
	for {
		frag, err := rd.br.ReadSlice('\n')
		if len(line)+len(frag) > MaxLineBytes {
			return nil, fmt.Errorf("recorder: read line %d: %w", rd.line+1, ErrLineTooLong)
		}
		switch {
		case err == nil:
			rd.line++
			if line == nil {
				line = frag
			} else {
				line = append(line, frag...)
			}
			return bytes.TrimSuffix(line, []byte("\n")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			line = append(line, frag...)
		case err == io.EOF:
			if len(line)+len(frag) == 0 {
				return nil, io.EOF
			}
			rd.line++
			return append(line, frag...), nil
		default:
			return nil, fmt.Errorf("recorder: read line %d: %w", rd.line+1, err)
		}
	}
}
