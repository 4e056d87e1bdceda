package main

import (
	"io"
	"sync"
	"time"
)

// logBuffer gathers the log lines of `sshward-ca serve` and writes them
// every logFlushEvery (or as soon as logFlushAt bytes wait), so that a busy
// CA does not pay one write system call per issued certificate. Lines keep
// their order and are never split (slog writes each record in one Write).
// The durable record of every decision is the audit log, committed before
// any answer; a crash can lose at most the last logFlushEvery of lines.
type logBuffer struct {
	mu     sync.Mutex
	w      io.Writer
	buf    []byte
	closed bool // after Close, writes go straight through
	stop   chan struct{}
	done   chan struct{}
}

const (
	logFlushEvery = 50 * time.Millisecond
	logFlushAt    = 64 << 10
)

func newLogBuffer(w io.Writer) *logBuffer {
	l := &logBuffer{w: w, stop: make(chan struct{}), done: make(chan struct{})}
	go l.loop()
	return l
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.w.Write(p)
	}
	l.buf = append(l.buf, p...)
	if len(l.buf) >= logFlushAt {
		l.flushLocked()
	}
	return len(p), nil
}

func (l *logBuffer) flushLocked() {
	if len(l.buf) == 0 {
		return
	}
	_, _ = l.w.Write(l.buf) // nowhere to report a failing stderr
	if cap(l.buf) > 4*logFlushAt {
		l.buf = nil // a burst's buffer is not kept forever
	} else {
		l.buf = l.buf[:0]
	}
}

func (l *logBuffer) loop() {
	defer close(l.done)
	t := time.NewTicker(logFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			l.flushLocked()
			l.mu.Unlock()
		}
	}
}

// Close writes what is left; later writes go straight through.
func (l *logBuffer) Close() {
	select {
	case <-l.stop:
		return
	default:
	}
	close(l.stop)
	<-l.done
	l.mu.Lock()
	l.flushLocked()
	l.closed = true
	l.mu.Unlock()
}
