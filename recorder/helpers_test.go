package recorder

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
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

// parseCast reads a whole cast strictly, failing the test on any error.
func parseCast(t testing.TB, data []byte) (Header, []Event) {
	t.Helper()
	rd, err := NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("NewReader: %v\n%s", err, data)
	}
	var evs []Event
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return rd.Header(), evs
		}
		if err != nil {
			t.Fatalf("Next: %v\n%s", err, data)
		}
		evs = append(evs, e)
	}
}

func readCastFile(t testing.TB, path string) (Header, []Event) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseCast(t, data)
}

// joined concatenates the data of the events with code.
func joined(evs []Event, code string) string {
	var b strings.Builder
	for _, e := range evs {
		if e.Code == code {
			b.WriteString(e.Data)
		}
	}
	return b.String()
}

func markers(evs []Event) []string {
	var ms []string
	for _, e := range evs {
		if e.Code == CodeMarker {
			ms = append(ms, e.Data)
		}
	}
	return ms
}

// openTestSpool opens a spool in a temporary directory and closes it at the
// end of the test.
func openTestSpool(t testing.TB, cfg SpoolConfig) *Spool {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir() + "/spool"
	}
	s, err := OpenSpool(context.Background(), cfg)
	if err != nil {
		t.Fatalf("OpenSpool: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Spool.Close: %v", err)
		}
	})
	return s
}

func testMetadata(id string) Metadata {
	return Metadata{
		SessionID: id, Identity: "alice", Principal: "root", KeyID: "alice@laptop", Serial: 42,
		Tier: "production", Host: "web1", ClientAddr: "192.0.2.1:50022",
		Kind: KindShell, RecordInput: true,
	}
}

var testHeader = Header{Width: 80, Height: 24, Env: map[string]string{"TERM": "xterm-256color", "SHELL": "/bin/bash"}}

func readMeta(t testing.TB, path string) Metadata {
	t.Helper()
	m, err := readMetadata(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
