package agent

import (
	"bytes"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Input typed while the terminal does not echo is a secret by convention:
// sudo, ssh, mysql -p, passwd, read -s and getpass(3) all turn ECHO off
// (and leave ICANON on) while they read a password. The agent records
// such input as a marker with its length, never its bytes:
//
//	hidden input: 13 bytes typed with terminal echo off (not recorded)
//
// Raw-mode programs (readline, editors, pagers) turn ECHO off too, but
// also ICANON, and draw what is typed themselves: their input is recorded
// as usual. Input without a terminal (exec without a PTY) has no echo to
// go by and is recorded as usual; the output redaction patterns apply to
// it as to everything else.

// hiddenInputMarker is the marker that stands for n bytes of hidden input.
func hiddenInputMarker(n int) string {
	return "hidden input: " + strconv.Itoa(n) + " bytes typed with terminal echo off (not recorded)"
}

// inputRecorder records what the user types into a session's terminal,
// leaving out what is typed while the terminal does not echo.
type inputRecorder struct {
	rec *sessionRecording
	// hidden reports whether the terminal hides input now; it is asked
	// for every chunk, just before the chunk goes to the terminal, so
	// that the program's latest tcsetattr decides.
	hidden func() bool

	mu      sync.Mutex // guards pending; serialises record and flush
	pending int        // hidden bytes not yet in a marker
}

// record is the input pump's tap: false withholds p (closed tier, the
// recording failed).
func (ir *inputRecorder) record(p []byte) bool {
	ir.mu.Lock()
	defer ir.mu.Unlock()
	if ir.hidden() {
		ir.pending += len(p)
		// One marker per line typed: the password and its Enter.
		if bytes.ContainsAny(p, "\r\n") {
			return ir.flushLocked()
		}
		return true
	}
	if !ir.flushLocked() {
		return false
	}
	return ir.rec.input(p)
}

// flush writes the marker of hidden input not yet reported; the session
// calls it before closing the recording.
func (ir *inputRecorder) flush() {
	ir.mu.Lock()
	defer ir.mu.Unlock()
	ir.flushLocked()
}

func (ir *inputRecorder) flushLocked() bool {
	if ir.pending == 0 {
		return true
	}
	n := ir.pending
	ir.pending = 0
	return ir.rec.write(func(rec Recording) error { return rec.Marker(hiddenInputMarker(n)) })
}

// echoOff reports whether the terminal hides what is typed: ECHO off in
// canonical mode. On Linux the master side reports the terminal's (slave
// side's) modes. If the modes cannot be read, input counts as hidden: a
// password is worse in a recording than a missing keystroke.
func (st *stdio) echoOff() bool {
	var lflag uint32
	err := st.control(func(fd int) error {
		tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err == nil {
			lflag = tio.Lflag
		}
		return err
	})
	if err != nil {
		return true
	}
	return lflag&unix.ECHO == 0 && lflag&unix.ICANON != 0
}
