package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/sshward/sshward/ca/api"
)

// Recording off the data path (issue 10). An output pump reads the
// process's output and hands it to the recorder through a recQueue; the
// recorder (escaping, hashing, writing the spool file) runs on a goroutine
// of its own, beside the sender that encrypts and sends to the client, so
// that a busy session keeps both cores busy instead of doing one thing
// after the other. The queue is bounded, and the tier's failure mode
// decides what happens when the recorder cannot keep up:
//
//   - closed: the pump waits for room (backpressure: the session slows down
//     to the recorder's pace), and the sender is handed only what the
//     recorder has written to the spool file (the user sees only what is
//     recorded, as before). No byte is dropped.
//   - open: the pump never waits for the recorder. Output that finds the
//     queue full is sent to the client all the same, but not recorded; the
//     recorder then writes a marker saying how many bytes are missing
//     (recorder.DroppedLabel), the first drop of a session raises an alert
//     and an unrecorded-session report, and the recording closes
//     incomplete.

const (
	// recChunk is the size of the queue's buffers: small reads (a
	// terminal's few KiB) are gathered into one.
	recChunkSize = 64 << 10
	// recQueueBytes bounds what one pump's queue holds: how far the
	// recorder may fall behind before the tier's rule applies.
	recQueueBytes = 4 << 20
	// recSendBytes bounds what a closed tier's recorder has handed to the
	// sender and the sender has not sent yet.
	recSendBytes = 1 << 20
	// recKeepFree is how many spare buffers a queue keeps for reuse; the
	// rest go to the garbage collector, so that an idle session holds
	// little.
	recKeepFree = 4
	// recReadSize is what a recorded pump reads at once: a pipe's
	// default capacity, so that a busy command's output takes one read.
	recReadSize = 64 << 10
)

// recItem is one queued piece of output.
type recItem struct {
	b []byte
	// dropped is how many bytes were dropped (not queued) just before b.
	dropped int64
}

// recQueue carries one output pump's bytes to its recorder goroutine.
type recQueue struct {
	limit int
	ready chan struct{} // a token when items were queued or the queue closed
	space chan struct{} // a token when the recorder took the items

	mu      sync.Mutex // guards the fields below
	items   []recItem
	held    int   // bytes in items
	dropped int64 // bytes dropped since the last queued item
	closed  bool  // the pump ended: nothing more is queued
	stopped bool  // the recorder gave up (closed tier failure): puts fail
	free    [][]byte

	// waits counts the puts that had to wait for the recorder (the
	// closed tier's backpressure), drops the offers that found no room.
	waits, drops atomic.Int64
}

func newRecQueue(limit int) *recQueue {
	return &recQueue{limit: limit, ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// appendLocked queues a copy of p, into the last item's buffer when it has
// room and no drop lies between them.
func (q *recQueue) appendLocked(p []byte, dropped int64) {
	if n := len(q.items); n > 0 && dropped == 0 {
		last := &q.items[n-1]
		if cap(last.b)-len(last.b) >= len(p) {
			last.b = append(last.b, p...)
			q.held += len(p)
			return
		}
	}
	var b []byte
	if k := len(q.free); k > 0 && cap(q.free[k-1]) >= len(p) {
		b, q.free = q.free[k-1][:0], q.free[:k-1]
	} else {
		b = make([]byte, 0, max(recChunkSize, len(p)))
	}
	q.items = append(q.items, recItem{b: append(b, p...), dropped: dropped})
	q.held += len(p)
}

// put queues a copy of p, waiting while the queue is full (closed tier).
// It returns false once the recorder stopped: p is not to be sent.
func (q *recQueue) put(p []byte) bool {
	waited := false
	for {
		q.mu.Lock()
		if q.stopped {
			q.mu.Unlock()
			return false
		}
		if q.held == 0 || q.held+len(p) <= q.limit {
			q.appendLocked(p, 0)
			q.mu.Unlock()
			wake(q.ready)
			return true
		}
		q.mu.Unlock()
		if !waited {
			waited = true
			q.waits.Add(1)
		}
		<-q.space
	}
}

// pass moves items (their buffers, not copies) into q, waiting while q
// holds its limit (the closed tier's recorder handing recorded output to
// the sender). It counts the buffers' capacity, not their length: a
// terminal's small reads each hold a whole buffer when the recorder keeps
// up, and a slow client must not make the sender hold hundreds of them.
// It returns false once q stopped.
func (q *recQueue) pass(items []recItem) bool {
	n := 0
	for _, it := range items {
		n += cap(it.b)
	}
	waited := false
	for {
		q.mu.Lock()
		if q.stopped {
			q.mu.Unlock()
			return false
		}
		if q.held == 0 || q.held+n <= q.limit {
			q.items = append(q.items, items...)
			q.held += n
			q.mu.Unlock()
			wake(q.ready)
			return true
		}
		q.mu.Unlock()
		if !waited {
			waited = true
			q.waits.Add(1)
		}
		<-q.space
	}
}

// putRead is put for buf[:n], just read into buf (a recChunkSize buffer):
// a large read is queued as it is, without a copy, and a spare buffer is
// returned to read into next; a small one is copied (gathered with the
// reads before it) and buf is returned for reuse.
func (q *recQueue) putRead(buf []byte, n int) ([]byte, bool) {
	if n < recChunkSize/2 || cap(buf) != recChunkSize {
		return buf, q.put(buf[:n])
	}
	waited := false
	for {
		q.mu.Lock()
		if q.stopped {
			q.mu.Unlock()
			return buf, false
		}
		if q.held == 0 || q.held+n <= q.limit {
			q.items = append(q.items, recItem{b: buf[:n]})
			q.held += n
			var next []byte
			if k := len(q.free); k > 0 {
				next, q.free = q.free[k-1][:recChunkSize], q.free[:k-1]
			}
			q.mu.Unlock()
			wake(q.ready)
			if next == nil {
				next = make([]byte, recChunkSize)
			}
			return next, true
		}
		q.mu.Unlock()
		if !waited {
			waited = true
			q.waits.Add(1)
		}
		<-q.space
	}
}

// offer queues a copy of p if it fits; otherwise p is counted as dropped
// (open tier). It never waits.
func (q *recQueue) offer(p []byte) {
	q.mu.Lock()
	if q.held+len(p) > q.limit {
		q.dropped += int64(len(p))
		q.mu.Unlock()
		q.drops.Add(1)
		return
	}
	q.appendLocked(p, q.dropped)
	q.dropped = 0
	q.mu.Unlock()
	wake(q.ready)
}

// take waits for queued items and returns them all, leaving items (emptied)
// in their place; false once the queue is closed and empty.
func (q *recQueue) take(items []recItem) ([]recItem, bool) {
	for {
		q.mu.Lock()
		if len(q.items) == 0 && q.closed && q.dropped > 0 {
			// Dropped at the very end: say so after the last item.
			q.items = append(q.items, recItem{dropped: q.dropped})
			q.dropped = 0
		}
		if len(q.items) > 0 {
			out := q.items
			q.items, q.held = items[:0], 0
			q.mu.Unlock()
			wake(q.space)
			return out, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		<-q.ready
	}
}

// release gives the buffers of items back for reuse.
func (q *recQueue) release(items []recItem) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range items {
		if b := items[i].b; cap(b) == recChunkSize && len(q.free) < recKeepFree {
			q.free = append(q.free, b[:0])
		}
		items[i] = recItem{}
	}
}

// close says the pump ended: take returns what is left, then false.
func (q *recQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	wake(q.ready)
}

// stop makes every later put fail (the recorder failed on a closed tier)
// and wakes a waiting put.
func (q *recQueue) stop() {
	q.mu.Lock()
	q.stopped = true
	q.items, q.held = nil, 0
	q.mu.Unlock()
	wake(q.space)
}

// pumpRecorded is pumpOutput for a recorded stream: the pump reads, the
// recorder records beside it, the sender sends (see the top of this file).
// It returns once all three are done.
func (s *session) pumpRecorded(r io.Reader, w io.Writer, rec *sessionRecording) {
	q := newRecQueue(recQueueBytes)
	s.c.srv.recQueues.add(q)
	defer s.c.srv.recQueues.remove(q)
	if rec.acks() {
		buf := make([]byte, recChunkSize)
		// Closed: pump -> recorder -> sender; the recorder passes the
		// buffers it recorded on, and the sender gives them back.
		toSend := newRecQueue(recSendBytes)
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			s.sendItems(toSend, q, w)
		}()
		recorded := make(chan struct{})
		go func() {
			defer close(recorded)
			defer toSend.close()
			s.recordThenSend(q, rec, toSend)
		}()
		defer func() {
			q.close()
			<-recorded
			<-sent
		}()
		for {
			n, err := r.Read(buf)
			if n > 0 {
				var ok bool
				if buf, ok = q.putRead(buf, n); !ok {
					return // not recorded: withheld, and the session is ending
				}
			}
			if err != nil {
				return
			}
		}
	}
	// Open: the pump hands each read to the sender and, if it fits, to
	// the recorder.
	buf := make([]byte, recReadSize)
	out := newOutputQueue()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		s.sendOutput(out, w)
	}()
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		s.recordBeside(q, rec)
	}()
	defer func() {
		q.close()
		<-recorded
		out.close()
		<-sent
	}()
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if !rec.unrecorded() {
				q.offer(buf[:n])
			}
			putAll(out, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// recordThenSend is the closed tier's recorder: it records what the pump
// queued, commits it to the spool file in one write, and only then passes
// it to the sender. When the recorder fails, nothing more is sent and the
// pump is stopped (the session ends: sessionRecording.fail).
func (s *session) recordThenSend(q *recQueue, rec *sessionRecording, toSend *recQueue) {
	var items []recItem
	for {
		var ok bool
		items, ok = q.take(items)
		if !ok {
			return
		}
		accepted := true
		for _, it := range items {
			if accepted && len(it.b) > 0 {
				accepted = rec.output(it.b)
			}
		}
		if !accepted || !rec.commit() {
			q.stop()
			q.release(items)
			return
		}
		if !toSend.pass(items) {
			q.stop()
			q.release(items)
			return
		}
	}
}

// sendItems sends what toSend holds to w until it closes, giving the
// buffers back to q.
func (s *session) sendItems(toSend, q *recQueue, w io.Writer) {
	var items []recItem
	for {
		var ok bool
		items, ok = toSend.take(items)
		if !ok {
			return
		}
		for _, it := range items {
			if _, err := w.Write(it.b); err != nil {
				// The client is gone; keep draining so the process is not
				// blocked on a full pipe before it is killed.
				w = io.Discard
			}
		}
		q.release(items)
	}
}

// recordBeside is the open tier's recorder: it records what the pump
// queued, and marks what the pump dropped. The sender does not wait for it.
func (s *session) recordBeside(q *recQueue, rec *sessionRecording) {
	var items []recItem
	for {
		var ok bool
		items, ok = q.take(items)
		if !ok {
			return
		}
		for _, it := range items {
			if it.dropped > 0 {
				rec.dropped(it.dropped)
			}
			if len(it.b) > 0 {
				rec.output(it.b)
			}
		}
		q.release(items)
	}
}

// putAll hands p to the sender in pieces the queue takes.
func putAll(out *outputQueue, p []byte) {
	for len(p) > 0 {
		n := min(len(p), pumpChunk)
		out.put(p[:n])
		p = p[n:]
	}
}

// sendOutput sends what out holds to w until out closes.
func (s *session) sendOutput(out *outputQueue, w io.Writer) {
	var buf []byte
	for {
		p, ok := out.take(buf)
		if !ok {
			return
		}
		if _, err := w.Write(p); err != nil {
			// The client is gone; keep draining so the process is not
			// blocked on a full pipe before it is killed.
			w = io.Discard
		}
		buf = p
	}
}

// recQueueSet is the server's live recorder queues, for tests and status:
// how often the closed tier's backpressure applied and the open tier
// dropped.
type recQueueSet struct {
	mu    sync.Mutex // guards the fields below
	live  map[*recQueue]struct{}
	waits int64 // of queues gone
	drops int64
}

func (s *recQueueSet) add(q *recQueue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live == nil {
		s.live = map[*recQueue]struct{}{}
	}
	s.live[q] = struct{}{}
}

func (s *recQueueSet) remove(q *recQueue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.live, q)
	s.waits += q.waits.Load()
	s.drops += q.drops.Load()
}

// counts returns how many puts waited for a recorder and how many
// offers were dropped, over every queue so far.
func (s *recQueueSet) counts() (waits, drops int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	waits, drops = s.waits, s.drops
	for q := range s.live {
		waits += q.waits.Load()
		drops += q.drops.Load()
	}
	return waits, drops
}

// errRecorderBehind is the cause of dropped output in alerts and reports.
var errRecorderBehind = errors.New("agent: the recorder could not keep up with the session's output")

// recordingDropped raises the alert for the first output an open tier's
// session dropped from its recording (n bytes): the agent's log and audit,
// and an unrecorded-session report to the CA and the playback server. The
// session goes on; the cast's markers say how much each gap lacks.
func (s *session) recordingDropped(n int64) {
	err := fmt.Errorf("%w: %d bytes of output not recorded so far", errRecorderBehind, n)
	s.log.Error("agent: ALERT recorder fell behind; tier fails open: output sent but not recorded",
		"alert", true, "err", err, "dropped_bytes", n, "on_recording_failure", string(FailOpen))
	s.c.srv.audit(context.WithoutCancel(s.ctx), s.auditEvent(AuditRecordingDropped, err.Error(), string(FailOpen)))
	s.mu.Lock()
	shown := s.shown
	s.mu.Unlock()
	s.reportUnrecorded(api.UnrecordedDropped, err, shown)
}
