package recorder_test

import (
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sshward/sshward/recorder"
)

// fakeClock advances by step on every call, so event times are predictable.
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func newFakeClock(step time.Duration) *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC), step: step}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.t
	c.t = c.t.Add(c.step)
	return now
}

func testMetadata(id string) recorder.Metadata {
	return recorder.Metadata{
		SessionID: id, Identity: "alice", Principal: "root", KeyID: "alice@laptop", Serial: 42,
		Tier: "production", Host: "web1", ClientAddr: "192.0.2.1:50022",
		Kind: recorder.KindShell, RecordInput: true,
	}
}

var testHeader = recorder.Header{Width: 80, Height: 24, Env: map[string]string{"TERM": "xterm-256color", "SHELL": "/bin/bash"}}

// lockedBuffer is a strings.Builder safe for the spool's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// newTestLogger logs text lines into b. Read b only after the spool is idle.
func newTestLogger(b *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedBuffer{b: b}, nil))
}
