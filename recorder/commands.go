package recorder

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Command timeline (issue 13 §3): the commands of a session, extracted from
// its recording. An exec session has one, its command line, with the exit
// status. A shell with recorded input has each line typed, rebuilt from
// the keystrokes as a line editor would (LineEditor), at the moment of its
// Enter. A shell without recorded input has what follows a shell prompt
// in the output ("user@host:~$ ls"), a best effort.

// Where a timeline entry comes from.
const (
	CommandFromExec   = "exec"
	CommandFromInput  = "input"
	CommandFromPrompt = "prompt"
)

// MaxTimelineCommands bounds a timeline.
const MaxTimelineCommands = 10000

// Command is one entry of a session's command timeline.
type Command struct {
	Time       float64 `json:"time"` // seconds from the start, as the cast's events
	Command    string  `json:"command"`
	Source     string  `json:"source"`
	ExitStatus *int    `json:"exit_status,omitempty"`
}

// maxEditLine bounds a line being rebuilt.
const maxEditLine = 4 << 10

// LineEditor rebuilds typed lines from keystrokes as bash's readline (emacs
// mode) would for the common keys: printable text, backspace/DEL, ^U
// (kill the line), ^W (kill the word before), ^C (drop the line), Tab (a
// space: the completion is the shell's), escape sequences such as cursor
// keys skipped (history and in-line moves are not followed). The zero
// value is ready.
type LineEditor struct {
	line  []byte // the line being edited
	inEsc int    // bytes of an escape sequence being skipped (0: none)
}

// Feed takes keystrokes and returns the non-blank lines they finished.
func (e *LineEditor) Feed(p []byte) (done [][]byte) {
	for _, b := range p {
		if e.inEsc > 0 {
			// ESC [ params final, ESC O x, or ESC x.
			e.inEsc++
			if e.inEsc == 2 && b != '[' && b != 'O' {
				e.inEsc = 0
			} else if e.inEsc > 2 && b >= 0x40 && b <= 0x7e || e.inEsc > 16 {
				e.inEsc = 0
			}
			continue
		}
		switch {
		case b == 0x1b:
			e.inEsc = 1
		case b == '\r' || b == '\n':
			if len(bytes.TrimSpace(e.line)) > 0 {
				done = append(done, append([]byte(nil), e.line...))
			}
			e.line = e.line[:0]
		case b == 0x7f || b == 0x08:
			if len(e.line) > 0 {
				_, n := utf8.DecodeLastRune(e.line)
				e.line = e.line[:len(e.line)-n]
			}
		case b == 0x15, b == 0x03: // ^U, ^C
			e.line = e.line[:0]
		case b == 0x17: // ^W: spaces, then the word before them
			i := len(e.line)
			for i > 0 && e.line[i-1] == ' ' {
				i--
			}
			for i > 0 && e.line[i-1] != ' ' {
				i--
			}
			e.line = e.line[:i]
		case b == '\t':
			e.line = append(e.line, ' ')
		case b < 0x20:
			// other control keys: no text
		default:
			if len(e.line) < maxEditLine {
				e.line = append(e.line, b)
			}
		}
	}
	return done
}

// promptLine finds a command after a shell prompt: "user@host:~$ cmd",
// "[user@host dir]# cmd", "$ cmd".
var promptLine = regexp.MustCompile(`^(?:\S*[@:]\S*|\[[^\]]{1,128}\])?\s?[$#] (\S.*)$`)

// ansiSeq matches terminal escape sequences (CSI, OSC, two-byte).
var ansiSeq = regexp.MustCompile(`\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])`)

// Commands reads the events of rd and returns the session's timeline;
// meta says what kind of session it is.
func Commands(rd *Reader, meta Metadata) ([]Command, error) {
	if meta.Kind == KindExec || meta.Kind == KindSubsystem {
		if meta.Command == "" {
			return []Command{}, nil
		}
		return []Command{{Time: 0, Command: meta.Command, Source: CommandFromExec, ExitStatus: meta.ExitStatus}}, nil
	}
	out := []Command{}
	var ed LineEditor
	var outLine []byte
	for len(out) < MaxTimelineCommands {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, err
		}
		switch {
		case meta.RecordInput && e.Code == CodeInput:
			for _, l := range ed.Feed([]byte(e.Data)) {
				out = append(out, Command{Time: e.Time, Command: string(l), Source: CommandFromInput})
			}
		case !meta.RecordInput && e.Code == CodeOutput:
			data := []byte(e.Data)
			for len(data) > 0 {
				i := bytes.IndexByte(data, '\n')
				if i < 0 {
					if len(outLine)+len(data) < maxEditLine {
						outLine = append(outLine, data...)
					}
					break
				}
				outLine = append(outLine, data[:i]...)
				data = data[i+1:]
				line := strings.TrimRight(ansiSeq.ReplaceAllString(string(outLine), ""), "\r ")
				outLine = outLine[:0]
				if m := promptLine.FindStringSubmatch(line); m != nil {
					out = append(out, Command{Time: e.Time, Command: m[1], Source: CommandFromPrompt})
				}
			}
		}
	}
	return out, nil
}
