package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int // writes
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	return l.b.Write(p)
}

func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestLogBufferKeepsEveryLineInOrder: concurrent loggers' lines all arrive,
// whole and in each writer's order, in far fewer writes; lines written
// after a quiet moment arrive without Close; Close flushes the rest and
// later lines go straight through.
func TestLogBufferKeepsEveryLineInOrder(t *testing.T) {
	out := &lockedBuf{}
	l := newLogBuffer(out)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				fmt.Fprintf(l, "g=%d i=%d %s\n", g, i, strings.Repeat("x", 40))
			}
		})
	}
	wg.Wait()
	fmt.Fprintf(l, "quiet line\n")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "quiet line\n"); {
		if time.Now().After(deadline) {
			t.Fatal("a buffered line never reached the log without Close")
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintf(l, "last line\n")
	l.Close()
	fmt.Fprintf(l, "after close\n")
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*500+3 || lines[len(lines)-2] != "last line" || lines[len(lines)-1] != "after close" {
		t.Fatalf("%d lines, ending %q", len(lines), lines[len(lines)-2:])
	}
	next := map[int]int{}
	for _, ln := range lines[:8*500] {
		var g, i int
		if _, err := fmt.Sscanf(ln, "g=%d i=%d", &g, &i); err != nil || !strings.HasSuffix(ln, strings.Repeat("x", 40)) {
			t.Fatalf("torn line %q", ln)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	if out.n > 4000/10 {
		t.Errorf("%d writes for 4003 lines: not batched", out.n)
	}
}
