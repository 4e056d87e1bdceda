package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
)

// errWaitTimeout is the cause of a wait that ran out of time (see loginOIDC).
var errWaitTimeout = errors.New("timed out")

// waitNotice says on stderr what the CLI is waiting for and for how long,
// so that a login that hangs on the provider is not a silent terminal. On a
// terminal it is one line rewritten every second, cut to the terminal's
// width; elsewhere (a log, a pipe) a line at the start and then every
// noticeEvery, so the log stays short. Never on stdout: --json output stays
// clean.
const noticeEvery = 15 * time.Second

// startNotice starts the notice; stop ends it and clears the terminal
// line. what reads "the identity provider at URL (browser login)"; timeout
// is how long the caller waits in all (see waitTimedOut).
func (e *env) startNotice(what string, timeout time.Duration) (stop func()) {
	width := 0
	if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			width = w
		} else {
			width = 80
		}
	}
	start := e.now()
	line := func() string {
		s := fmt.Sprintf("waiting for %s, %s of %s (Ctrl-C to stop)", what, e.now().Sub(start).Round(time.Second), timeout)
		if width > 0 && len(s) > width-1 {
			s = s[:width-2] + "…"
		}
		return s
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		every := noticeEvery
		if width > 0 {
			every = time.Second
		}
		t := time.NewTicker(every)
		defer t.Stop()
		e.notice(width, line())
		for {
			select {
			case <-done:
				if width > 0 {
					_, _ = io.WriteString(e.stderr, "\r\x1b[K")
				}
				return
			case <-t.C:
				e.notice(width, line())
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// notice writes one progress line: in place on a terminal (width > 0).
func (e *env) notice(width int, s string) {
	if width > 0 {
		_, _ = fmt.Fprintf(e.stderr, "\r\x1b[K%s", s)
		return
	}
	_, _ = fmt.Fprintln(e.stderr, s)
}

// waitTimedOut tells a wait that ran out of its own time from one the
// caller cancelled (Ctrl-C) or that failed.
func waitTimedOut(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errWaitTimeout)
}
