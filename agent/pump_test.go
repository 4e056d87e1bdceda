package agent

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedWriter records each write; the first blocks until open is closed,
// as a channel write does while the client's window is shut.
type gatedWriter struct {
	open    chan struct{}
	entered atomic.Int32 // writes begun

	mu     sync.Mutex
	writes [][]byte
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.entered.Add(1)
	<-w.open
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

// TestOutputQueue: what the pump puts comes out whole and in order, in
// writes of at most pumpChunk bytes; while a send is under way the puts
// gather into one write (a terminal's 4 KiB reads become few packets);
// close hands over what is left before take reports the end.
func TestOutputQueue(t *testing.T) {
	for _, tt := range []struct {
		name      string
		chunks    []int // sizes of the puts
		maxWrites int   // the sender is held until every put is done, or blocks them
	}{
		{"one small", []int{5}, 1},
		{"terminal reads gather", []int{4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096}, 2},
		{"full chunks", []int{pumpChunk, pumpChunk, pumpChunk}, 3},
		{"uneven", []int{1, pumpChunk - 1, 7, pumpChunk, 3, 3, 3}, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := newOutputQueue()
			w := &gatedWriter{open: make(chan struct{})}
			done := make(chan struct{})
			go func() {
				defer close(done)
				var buf []byte
				for {
					out, ok := q.take(buf)
					if !ok {
						return
					}
					w.Write(out)
					buf = out
				}
			}()
			var want bytes.Buffer
			put := make(chan struct{})
			var next, finished atomic.Int32 // the put under way; puts returned
			go func() {
				defer close(put)
				for i, n := range tt.chunks {
					p := bytes.Repeat([]byte{byte('a' + i%26)}, n)
					want.Write(p)
					next.Store(int32(i))
					q.put(p)
					finished.Store(int32(i + 1))
				}
				q.close()
			}()
			// Hold the sender in its first write until the puts are done or
			// one is blocked on a full queue (what is pending and what it
			// puts exceed pumpChunk: nothing changes the queue until the
			// sender goes on). Polled with a bound, not timed: on a loaded
			// machine a fixed wait let the sender go on early.
			blocked := func() bool {
				select {
				case <-put:
					return true
				default:
				}
				i := next.Load()
				q.mu.Lock()
				full := len(q.pending)+tt.chunks[i] > pumpChunk
				q.mu.Unlock()
				return full && finished.Load() == i
			}
			// Twice, 20 ms apart: a put that just appended and has not
			// returned yet looks blocked for an instant.
			stillBlocked := func() bool {
				if !blocked() {
					return false
				}
				time.Sleep(20 * time.Millisecond)
				return blocked()
			}
			for deadline := time.Now().Add(30 * time.Second); w.entered.Load() == 0 || !stillBlocked(); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the puts neither finished nor blocked on a full queue")
				}
			}
			close(w.open)
			<-put
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("sender did not finish after close")
			}
			got := bytes.Join(w.writes, nil)
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("sent %d bytes, want the %d put, in order", len(got), want.Len())
			}
			for _, wr := range w.writes {
				if len(wr) > pumpChunk {
					t.Errorf("a write of %d bytes, more than %d", len(wr), pumpChunk)
				}
			}
			if len(w.writes) > tt.maxWrites {
				t.Errorf("%d writes for %d puts, want at most %d", len(w.writes), len(tt.chunks), tt.maxWrites)
			}
		})
	}
}

// TestOutputQueueConcurrent: a racing sender and pump, many rounds, lose
// and reorder nothing.
func TestOutputQueueConcurrent(t *testing.T) {
	q := newOutputQueue()
	var got bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf []byte
		for {
			out, ok := q.take(buf)
			if !ok {
				return
			}
			got.Write(out)
			buf = out
		}
	}()
	var want bytes.Buffer
	for i := range 20000 {
		p := fmt.Appendf(nil, "line %d %s\n", i, bytes.Repeat([]byte("x"), i%3000))
		want.Write(p)
		q.put(p)
	}
	q.close()
	<-done
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("got %d bytes, want %d in order", got.Len(), want.Len())
	}
}
