package recorder

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is the asciicast format version this package reads and writes.
// Debian's asciinema 2.2 refuses version 3, so version 2 it is.
const Version = 2

// MaxLineBytes bounds one line of a cast file, header included. The Writer
// keeps its lines far below it (see maxEventData); the Reader refuses longer
// lines so a hostile file cannot make it buffer without limit.
const MaxLineBytes = 1 << 20

// Event codes (asciicast v2 "Event stream"; "x" is the exit event of
// asciicast v3, accepted when reading).
const (
	CodeOutput = "o" // data written to the terminal
	CodeInput  = "i" // data typed by the user
	CodeResize = "r" // terminal resized, data "COLSxROWS"
	CodeMarker = "m" // marker, data is its label
	CodeExit   = "x" // exit status, data is the status
)

// Header is the first line of an asciicast v2 file.
type Header struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp,omitempty"` // Unix seconds of the start
	Env       map[string]string `json:"env,omitempty"`       // TERM and SHELL by convention
	Title     string            `json:"title,omitempty"`
}

// Check reports the first field that asciinema would refuse.
func (h Header) Check() error {
	switch {
	case h.Version != Version:
		return fmt.Errorf("recorder: header: version is %d, want %d", h.Version, Version)
	case h.Width <= 0 || h.Width > maxTermSize:
		return fmt.Errorf("recorder: header: width %d out of range 1..%d", h.Width, maxTermSize)
	case h.Height <= 0 || h.Height > maxTermSize:
		return fmt.Errorf("recorder: header: height %d out of range 1..%d", h.Height, maxTermSize)
	case h.Timestamp < 0:
		return fmt.Errorf("recorder: header: negative timestamp %d", h.Timestamp)
	}
	return nil
}

// maxTermSize bounds terminal columns and rows; RFC 4254 carries them as
// uint32, no real terminal comes near this.
const maxTermSize = 1 << 16

// Event is one line after the header: [time, code, data].
type Event struct {
	Time float64 // seconds since the start of the recording
	Code string  // one of the Code constants
	Data string  // valid UTF-8
}

// Size parses the data of a resize event ("COLSxROWS").
func (e Event) Size() (cols, rows int, err error) {
	if e.Code != CodeResize {
		return 0, 0, fmt.Errorf("recorder: size of a %q event: %w", e.Code, ErrMalformed)
	}
	return parseSize(e.Data)
}

func parseSize(s string) (cols, rows int, err error) {
	c, r, ok := strings.Cut(s, "x")
	if ok {
		cols, err = strconv.Atoi(c)
		if err == nil {
			rows, err = strconv.Atoi(r)
		}
	}
	if !ok || err != nil || cols <= 0 || rows <= 0 || cols > maxTermSize || rows > maxTermSize ||
		c[0] == '+' || r[0] == '+' {
		return 0, 0, fmt.Errorf("recorder: resize %q is not COLSxROWS: %w", s, ErrMalformed)
	}
	return cols, rows, nil
}
