package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sshward/sshward/recorder"
)

// Text extraction for search: the "o" and "i" events of a cast become lines
// of plain text, each with the time it started. What a terminal would not
// show as text is dropped: escape sequences (ECMA-48 CSI, OSC, DCS and the
// other string controls, two- and three-byte ESC sequences) and control
// characters. Backspace and DEL rub out the last character (a shell echoes
// "\b \b"; typed input carries DEL); CR and LF end a line, so "\r\n",
// prompts redrawn with "\r" and progress bars all split into lines. A line
// longer than MaxLineText is cut into several.

// MaxLineText bounds one text line, in bytes.
const MaxLineText = 512

// Line is one line of text of a session.
type Line struct {
	Time float64 // seconds since the start, of the event that began the line
	Code string  // recorder.CodeOutput or recorder.CodeInput
	Text string
}

// escape parser states (ECMA-48 section 5).
const (
	stGround   = iota
	stEsc      // after ESC
	stEscInter // ESC then intermediate bytes, until a final byte
	stCSI      // ESC [ … until a final byte 0x40–0x7E
	stString   // OSC, DCS, SOS, PM, APC: until BEL (OSC) or ST (ESC \)
	stStrEsc   // ESC inside a string: '\' ends it
)

// Extractor turns the data of one stream ("o" or "i") into lines. Its state
// is exported so that indexing can stop between chunks of a live session
// and carry on later (it is saved as JSON with the index).
type Extractor struct {
	Code     string  `json:"code"`
	State    int     `json:"state"`
	Line     string  `json:"line"`      // text of the line being built
	LineTime float64 `json:"line_time"` // when it began
}

// Feed adds the data of one event at time t and returns the lines it
// completed.
func (x *Extractor) Feed(t float64, data string, out []Line) []Line {
	line := []byte(x.Line)
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c >= 0x80 && (x.State == stEsc || x.State == stEscInter || x.State == stCSI) {
			// Not part of any escape sequence (they are ASCII): the
			// sequence was cut off; this is text again.
			x.State = stGround
		}
		switch x.State {
		case stEsc:
			switch {
			case c == '[':
				x.State = stCSI
			case c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_':
				x.State = stString
			case c >= 0x20 && c <= 0x2f:
				x.State = stEscInter
			case c == 0x1b:
				// ESC ESC: stay
			default:
				x.State = stGround
			}
			continue
		case stEscInter:
			if c < 0x20 || c > 0x2f {
				x.State = stGround
			}
			continue
		case stCSI:
			if c >= 0x40 && c <= 0x7e {
				x.State = stGround
			} else if c == 0x1b {
				x.State = stEsc
			}
			continue
		case stString:
			switch c {
			case 0x07:
				x.State = stGround
			case 0x1b:
				x.State = stStrEsc
			}
			continue
		case stStrEsc:
			if c == '\\' {
				x.State = stGround
			} else if c != 0x1b {
				x.State = stString
			}
			continue
		}
		switch {
		case c == 0x1b:
			x.State = stEsc
		case c == '\r' || c == '\n':
			out = x.emit(line, out)
			line = line[:0]
		case c == '\b' || c == 0x7f:
			if len(line) > 0 {
				_, n := utf8.DecodeLastRune(line)
				line = line[:len(line)-n]
			}
		case c == 0x15 || c == 0x03: // ^U, ^C: the shell drops the line
			if x.Code == recorder.CodeInput {
				line = line[:0]
			}
		case c == '\t':
			line = x.add(line, t, " ")
		case c < 0x20:
			// other controls show nothing
		case c < utf8.RuneSelf:
			line = x.addText(line, t, data[i:i+1], &out)
		default:
			// Whole runes only, so that lines stay valid UTF-8 wherever
			// they are cut.
			r, size := utf8.DecodeRuneInString(data[i:])
			i += size - 1
			if r == utf8.RuneError && size == 1 || r >= 0x80 && r <= 0x9f {
				continue // not UTF-8, or a C1 control: nothing to show
			}
			line = x.addText(line, t, data[i-size+1:i+1], &out)
		}
	}
	x.Line = string(line)
	return out
}

// addText adds printable text, first emitting the line if it would grow
// past MaxLineText.
func (x *Extractor) addText(line []byte, t float64, s string, out *[]Line) []byte {
	if len(line)+len(s) > MaxLineText {
		*out = x.emit(line, *out)
		line = line[:0]
	}
	return x.add(line, t, s)
}

func (x *Extractor) add(line []byte, t float64, s string) []byte {
	if len(line) == 0 {
		x.LineTime = t
	}
	return append(line, s...)
}

// emit appends the line unless it is blank.
func (x *Extractor) emit(line []byte, out []Line) []Line {
	text := strings.TrimSpace(strings.ToValidUTF8(string(line), ""))
	if text == "" {
		return out
	}
	return append(out, Line{Time: x.LineTime, Code: x.Code, Text: text})
}

// Flush returns the line being built, at the end of a session.
func (x *Extractor) Flush(out []Line) []Line {
	out = x.emit([]byte(x.Line), out)
	x.Line, x.State = "", stGround
	return out
}

// Token bounds, in bytes. One-letter words would match nearly every line;
// longer tokens are cut (a prefix still finds them).
const (
	MinToken = 2
	MaxToken = 40
)

// Tokens returns the distinct lowercase words of s: runs of letters, digits
// and '_'. Words shorter than MinToken are dropped, longer than MaxToken cut.
func Tokens(s string) []string {
	var out []string
	start := -1
	flush := func(end int) {
		if start < 0 {
			return
		}
		w := strings.ToLower(s[start:end])
		start = -1
		if len(w) < MinToken {
			return
		}
		if len(w) > MaxToken {
			w = strings.ToValidUTF8(w[:MaxToken], "")
		}
		for _, o := range out {
			if o == w {
				return
			}
		}
		out = append(out, w)
	}
	for i, r := range s {
		if r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) {
			if start < 0 {
				start = i
			}
			continue
		}
		flush(i)
	}
	flush(len(s))
	return out
}

// normalize lowercases s and folds every run of white space into one space,
// so that a query matches a line however the spaces were typed.
func normalize(s string) string {
	return strings.Join(strings.Fields(strings.ToLower(s)), " ")
}

// errEvent marks a cast line that is not an event.
var errEvent = errors.New("not an asciicast event")

// DecodeEvent parses one event line [time, "code", "data"] (without its
// '\n'). It is what indexing runs over every line of a cast, so the common
// case (data without escapes) avoids encoding/json; anything unusual falls
// back to it. It accepts what recorder.Reader accepts for a single line and
// does not check the code.
func DecodeEvent(line []byte) (t float64, code, data string, err error) {
	b := bytes.TrimSpace(line)
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return 0, "", "", errEvent
	}
	b = b[1 : len(b)-1]
	comma := bytes.IndexByte(b, ',')
	if comma < 0 {
		return 0, "", "", errEvent
	}
	num := bytes.TrimSpace(b[:comma])
	if len(num) == 0 || !json.Valid(num) || (num[0] != '-' && (num[0] < '0' || num[0] > '9')) {
		return 0, "", "", errEvent
	}
	if t, err = strconv.ParseFloat(string(num), 64); err != nil || t < 0 {
		return 0, "", "", errEvent
	}
	rest := bytes.TrimSpace(b[comma+1:])
	code, rest, ok := cutJSONString(rest)
	if !ok {
		return 0, "", "", errEvent
	}
	rest = bytes.TrimSpace(rest)
	if len(rest) == 0 || rest[0] != ',' {
		return 0, "", "", errEvent
	}
	data, rest, ok = cutJSONString(bytes.TrimSpace(rest[1:]))
	if !ok || len(bytes.TrimSpace(rest)) != 0 {
		return 0, "", "", errEvent
	}
	return t, code, data, nil
}

// cutJSONString decodes the JSON string at the start of b and returns it
// and the rest of b.
func cutJSONString(b []byte) (string, []byte, bool) {
	if len(b) < 2 || b[0] != '"' {
		return "", nil, false
	}
	escaped := false
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\\':
			escaped = true
			i++ // skip the escaped byte: it may be '"'
		case c == '"':
			raw := b[:i+1]
			if !escaped && utf8.Valid(raw) && !hasControl(raw) {
				return string(raw[1:i]), b[i+1:], true
			}
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return "", nil, false
			}
			return s, b[i+1:], true
		}
	}
	return "", nil, false
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}
