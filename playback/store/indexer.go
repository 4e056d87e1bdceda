package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sshward/sshward/recorder"
)

// The search index (search.db). While a recording arrives, a background
// indexer reads the new bytes of its cast, turns "o" and "i" events into
// lines (Extractor) and appends them to the recording's last segment (see
// segment.go), under the key docKey(start, id) ‖ segment number, so that a
// search walks recordings newest first. Markers are kept apart, one key
// each.
//
// The indexer never stands between the server and its clients: Open
// returns before it has looked at a single recording, and the recordings a
// crash, an upgrade or a full disk left unindexed are caught up in the
// background, newest first, while Search answers for those already done and
// IndexStatus says how many are not.

// indexState is how far a recording is indexed; saved with every batch, in
// the same transaction as the batch's segments, so a crash repeats nothing.
type indexState struct {
	Offset     int64     `json:"offset"`    // cast bytes indexed, at a line end
	Seq        uint32    `json:"seq"`       // lines indexed
	MSeq       uint32    `json:"mseq"`      // next marker number
	Segs       uint32    `json:"segs"`      // segments written
	SegLines   uint32    `json:"seg_lines"` // lines in the last one (it has room below segMaxLines)
	Generation int       `json:"generation"`
	Out        Extractor `json:"out"`
	In         Extractor `json:"in"`
	Done       bool      `json:"done"`
	Truncated  bool      `json:"truncated,omitempty"` // MaxLinesPerSession reached
}

func newIndexState(gen int) indexState {
	return indexState{Generation: gen, Out: Extractor{Code: recorder.CodeOutput}, In: Extractor{Code: recorder.CodeInput}}
}

// Batch bounds of one indexing transaction: big enough to fill segments,
// small enough to keep a transaction's memory and duration modest.
const (
	indexBatchBytes = 4 << 20
	indexBatchLines = 5000
	maxMarkerText   = 512
	// Retry delays of a recording whose indexing failed (a full disk, an
	// I/O error): doubled from the first up to the last, so that a disk
	// with room again is caught up within retryMax without a restart.
	retryFirst = 250 * time.Millisecond
	retryMax   = 5 * time.Second
	// scanChunk bounds the recordings the start-up scan reads per
	// transaction: a long read transaction would hold up a writer that
	// needs to grow the file.
	scanChunk = 1000
)

// indexWorkers index recordings side by side: their commits share fsyncs
// (bbolt's Batch), which is what bounds catching up with thousands of
// small recordings.
const indexWorkers = 4

type indexer struct {
	s *Store

	mu       sync.Mutex // guards the fields below
	dirty    map[string]bool
	backlog  []string // found unindexed at start, newest first
	inBack   map[string]bool
	failed   map[string]retryState
	scanned  bool            // the start-up scan is done
	inflight map[string]bool // being indexed → taken from the backlog
	catching time.Time       // when the start-up catch-up began (zero: none under way)
	lastPick bool            // the last pick came from dirty: take the backlog next

	wake chan struct{} // capacity 1
	quit chan struct{} // closed by stop
	done chan struct{} // closed when run returns
}

type retryState struct {
	at    time.Time
	delay time.Duration
}

func newIndexer(s *Store) *indexer {
	return &indexer{s: s, dirty: map[string]bool{}, inBack: map[string]bool{}, failed: map[string]retryState{}, inflight: map[string]bool{},
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

func (x *indexer) poke(id string) {
	x.mu.Lock()
	x.dirty[id] = true
	x.mu.Unlock()
	x.signal()
}

func (x *indexer) signal() {
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

func (x *indexer) stop() {
	close(x.quit)
	<-x.done
}

// IndexStatus says how far the search index is behind the stored
// recordings.
type IndexStatus struct {
	// Scanned: the start-up scan for recordings left unindexed is done
	// (until then Pending counts only those found so far).
	Scanned bool `json:"scanned"`
	// Pending counts the finished recordings whose text is not all
	// searchable yet: left unindexed by a crash, an upgrade of the index
	// format or a failed write, and being caught up in the background.
	Pending int `json:"pending"`
	// Retrying counts those whose last indexing attempt failed (a full
	// disk, an I/O error); they are retried by themselves.
	Retrying int `json:"retrying"`
}

// IndexStatus returns how far the search index is behind.
func (s *Store) IndexStatus() IndexStatus {
	x := s.idx
	x.mu.Lock()
	defer x.mu.Unlock()
	pending := len(x.backlog)
	for id := range x.failed {
		if !x.inBack[id] {
			pending++
		}
	}
	for id, fromBacklog := range x.inflight {
		if _, f := x.failed[id]; fromBacklog && !f && !x.inBack[id] {
			pending++
		}
	}
	return IndexStatus{Scanned: x.scanned, Pending: pending, Retrying: len(x.failed)}
}

// next picks the recording to index next: poked ones and the start-up
// backlog in turn, so neither starves the other; never one that another
// worker is indexing (it stays dirty for later).
func (x *indexer) next() (string, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	now := time.Now()
	for id, r := range x.failed {
		if !r.at.After(now) && !x.dirty[id] {
			x.dirty[id] = true
		}
	}
	id, fromBacklog := "", false
	takeDirty := func() bool {
		for d := range x.dirty {
			if _, busy := x.inflight[d]; busy {
				continue
			}
			delete(x.dirty, d)
			if d == "" {
				continue
			}
			id, fromBacklog = d, false
			return true
		}
		return false
	}
	takeBacklog := func() bool {
		for len(x.backlog) > 0 {
			b := x.backlog[0]
			x.backlog = x.backlog[1:]
			delete(x.inBack, b)
			_, failed := x.failed[b]
			if _, busy := x.inflight[b]; failed || busy {
				continue // retried on its own schedule, or being indexed
			}
			id, fromBacklog = b, true
			return true
		}
		return false
	}
	found := false
	if x.lastPick {
		found = takeBacklog() || takeDirty()
	} else {
		found = takeDirty() || takeBacklog()
	}
	if !found {
		return "", false
	}
	x.lastPick = !fromBacklog
	x.inflight[id] = fromBacklog
	if len(x.dirty) > 0 || len(x.backlog) > 0 {
		x.signal() // wake another worker
	}
	return id, true
}

// backlogInFlightLocked reports whether a worker indexes a recording of the
// backlog.
func (x *indexer) backlogInFlightLocked() bool {
	for _, fromBacklog := range x.inflight {
		if fromBacklog {
			return true
		}
	}
	return false
}

// nextRetry is when the earliest failed recording is due (zero: none).
func (x *indexer) nextRetry() time.Time {
	x.mu.Lock()
	defer x.mu.Unlock()
	var at time.Time
	for _, r := range x.failed {
		if at.IsZero() || r.at.Before(at) {
			at = r.at
		}
	}
	return at
}

// result records the outcome of indexing id.
func (x *indexer) result(id string, err error) {
	x.mu.Lock()
	delete(x.inflight, id)
	prev, failedBefore := x.failed[id]
	if err == nil {
		delete(x.failed, id)
	} else {
		d := retryFirst
		if failedBefore {
			d = min(2*prev.delay, retryMax)
		}
		x.failed[id] = retryState{at: time.Now().Add(d), delay: d}
	}
	var caughtUp time.Duration
	if !x.catching.IsZero() && len(x.backlog) == 0 && !x.backlogInFlightLocked() {
		caughtUp, x.catching = time.Since(x.catching), time.Time{}
	}
	x.mu.Unlock()
	log := x.s.cfg.Logger
	if caughtUp > 0 {
		log.Info("store: search index caught up", "took", caughtUp.Round(time.Millisecond))
	}
	switch {
	case err != nil && !failedBefore:
		log.Error("store: indexing failed; retrying by itself", "session_id", id, "err", err)
	case err != nil:
		log.Debug("store: indexing failed again", "session_id", id, "err", err)
	case failedBefore:
		log.Info("store: indexing recovered", "session_id", id)
	}
}

func (x *indexer) run() {
	defer close(x.done)
	x.scan()
	if g := x.s.cfg.IndexingGate; g != nil {
		select {
		case <-g:
		case <-x.quit:
			return
		}
	}
	var wg sync.WaitGroup
	for range indexWorkers {
		wg.Go(x.work)
	}
	wg.Wait()
}

// work indexes recordings until the indexer stops.
func (x *indexer) work() {
	var enc segEncoder
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		id, ok := x.next()
		if !ok {
			wait := time.Hour
			if at := x.nextRetry(); !at.IsZero() {
				wait = max(time.Until(at), time.Millisecond)
			}
			timer.Reset(wait)
			select {
			case <-x.quit:
				return
			case <-x.wake:
			case <-timer.C:
			}
			continue
		}
		select {
		case <-x.quit:
			return
		default:
		}
		err := x.s.indexSession(id, &enc, x.quit)
		if errors.Is(err, ErrClosed) {
			return
		}
		x.result(id, err)
		if err == nil {
			x.signal() // a poke that came while id was in flight left it dirty
		}
	}
}

// scan runs once, in the background: it drops the search index of an
// older format (text.db, rebuilt from the casts) and queues, newest first,
// every recording not completely indexed.
func (x *indexer) scan() {
	s := x.s
	legacy := filepath.Join(s.cfg.Dir, legacyTextDB)
	if err := os.Remove(legacy); err == nil {
		s.cfg.Logger.Info("store: removed the search index of an older format; recordings are indexed again in the background", "file", legacy)
	} else if !errors.Is(err, os.ErrNotExist) {
		s.cfg.Logger.Error("store: remove the old search index", "file", legacy, "err", err)
	}
	var after []byte
	for {
		var ids []string
		err := s.db.View(func(tx *bolt.Tx) error {
			return s.sdb.View(func(stx *bolt.Tx) error {
				states := stx.Bucket(bucketIndexing)
				c := tx.Bucket(bucketByStart).Cursor()
				k, _ := c.First()
				if after != nil {
					c.Seek(after)
					k, _ = c.Next()
				}
				n := 0
				for ; k != nil && n < scanChunk; k, _ = c.Next() {
					n++
					after = bytes.Clone(k)
					id := k[8:]
					var st indexState
					if raw := states.Get(id); raw == nil || json.Unmarshal(raw, &st) != nil || !st.Done {
						ids = append(ids, string(id))
					}
				}
				if k == nil {
					after = nil
				}
				return nil
			})
		})
		if err != nil {
			s.cfg.Logger.Error("store: scan for unindexed recordings", "err", err)
			after = nil
		}
		x.mu.Lock()
		for _, id := range ids {
			if !x.inBack[id] {
				x.inBack[id] = true
				x.backlog = append(x.backlog, id)
			}
		}
		if after == nil {
			x.scanned = true
			if n := len(x.backlog); n > 0 {
				x.catching = time.Now()
				s.cfg.Logger.Info("store: search index catching up in the background; searches skip these recordings until then", "recordings", n)
			}
		}
		x.mu.Unlock()
		x.signal()
		if after == nil {
			return
		}
		select {
		case <-x.quit:
			return
		default:
		}
	}
}

// errStale: the recording changed (discarded or deleted) under a batch.
var errStale = errors.New("store: recording changed while indexing")

func (s *Store) indexState(id string) (indexState, bool, error) {
	var st indexState
	found := false
	err := s.sdb.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketIndexing).Get([]byte(id))
		if raw == nil {
			return nil
		}
		found = true
		return json.Unmarshal(raw, &st)
	})
	return st, found, err
}

// indexSession indexes what is new in a recording's cast, batch by batch.
func (s *Store) indexSession(id string, enc *segEncoder, quit <-chan struct{}) error {
	for {
		select {
		case <-quit:
			return nil
		default:
		}
		rec, err := s.getRecord(id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if rec.Deleting {
			return nil
		}
		st, found, err := s.indexState(id)
		if err != nil {
			return err
		}
		if !found {
			st = newIndexState(rec.Generation)
		}
		cs, _, err := s.Cast(id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if cs.Generation != st.Generation {
			// The bytes were discarded: forget their text and start over.
			if err := s.resetText(id, rec.Start, cs.Generation); err != nil {
				return err
			}
			continue
		}
		if st.Done || (st.Offset >= cs.Size && !cs.Finished) {
			return nil
		}
		next, lines, markers, err := s.readText(id, st, cs)
		if err != nil {
			return err
		}
		err = s.commitText(id, rec.Start, enc, st, next, lines, markers)
		if errors.Is(err, errStale) {
			continue
		}
		if err != nil {
			return err
		}
		if next.Done || next.Offset >= cs.Size {
			return nil
		}
	}
}

// commitText stores one batch, unless the recording was deleted or
// discarded since st was read.
func (s *Store) commitText(id string, start time.Time, enc *segEncoder, st, next indexState, lines []Line, markers []Marker) error {
	mu := s.textLock(id)
	mu.Lock()
	defer mu.Unlock()
	r, err := s.getRecord(id)
	if err != nil || r.Deleting || r.Generation != st.Generation {
		return errStale
	}
	next.Seq = st.Seq + uint32(len(lines))
	next.MSeq = st.MSeq + uint32(len(markers))
	// Batch: the commits of the workers share fsyncs. fn may run twice (alone
	// after a failed batch): it starts from next each time.
	err = s.sdb.Batch(func(tx *bolt.Tx) error {
		// The batch continues from st: had anything else indexed the
		// recording meanwhile, its lines would go in twice.
		var cur indexState
		if raw := tx.Bucket(bucketIndexing).Get([]byte(id)); raw != nil && json.Unmarshal(raw, &cur) != nil ||
			raw == nil && st.Offset != 0 || raw != nil && (cur.Offset != st.Offset || cur.Seq != st.Seq || cur.Segs != st.Segs || cur.SegLines != st.SegLines) {
			return errStale
		}
		n := next
		if err := putText(tx, s.vs, enc, id, start, &n, lines, st.MSeq, markers); err != nil {
			return err
		}
		return putIndexState(tx, id, &n)
	})
	if err != nil {
		return fmt.Errorf("store: index %s: %w", id, err)
	}
	return nil
}

// resetText drops a recording's text and starts its index over at gen.
func (s *Store) resetText(id string, start time.Time, gen int) error {
	mu := s.textLock(id)
	mu.Lock()
	defer mu.Unlock()
	if err := s.dropTextLocked(id, start); err != nil {
		return err
	}
	fresh := newIndexState(gen)
	return s.sdb.Update(func(tx *bolt.Tx) error { return putIndexState(tx, id, &fresh) })
}

// readText reads one batch of the cast from st.Offset (never past cs.Size)
// and returns the new state with the lines and markers found.
func (s *Store) readText(id string, st indexState, cs CastState) (indexState, []Line, []Marker, error) {
	f, err := s.OpenCast(id)
	if err != nil {
		return st, nil, nil, err
	}
	defer f.Close()
	st.Out.Code, st.In.Code = recorder.CodeOutput, recorder.CodeInput
	br := bufio.NewReaderSize(io.NewSectionReader(f, st.Offset, cs.Size-st.Offset), 64<<10)
	var lines []Line
	var markers []Marker
	start := st.Offset
	for st.Offset < cs.Size && st.Offset-start < indexBatchBytes && len(lines) < indexBatchLines {
		raw, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: read it whole.
			rest, err2 := br.ReadBytes('\n')
			raw, err = append(bytes.Clone(raw), rest...), err2
		}
		if len(raw) == 0 || raw[len(raw)-1] != '\n' {
			if err == nil || errors.Is(err, io.EOF) {
				break // the file is shorter than it was (discarded meanwhile)
			}
			return st, nil, nil, err
		}
		at := st.Offset
		st.Offset += int64(len(raw))
		if at == 0 {
			continue // the header
		}
		t, code, data, err := DecodeEvent(raw[:len(raw)-1])
		if err != nil {
			continue // kept as evidence, but nothing to index
		}
		switch code {
		case recorder.CodeOutput:
			lines = st.Out.Feed(t, data, lines)
		case recorder.CodeInput:
			lines = st.In.Feed(t, data, lines)
		case recorder.CodeMarker:
			if strings.HasPrefix(data, recorder.BlobLabelPrefix) {
				continue // a side blob reference: its preview is in the output
			}
			markers = append(markers, Marker{Time: t, Label: truncateText(data, maxMarkerText)})
			// `ssh host cmd`: the command line the user typed is in the start
			// marker (and the metadata list), not in the output; index it as
			// input so a search for the command finds the session even on
			// tiers that do not record keystrokes.
			if f, ok := recorder.ParseMarker(data); ok && f["command"] != "" && strings.HasPrefix(data, "session start") {
				lines = append(lines, Line{Time: t, Code: recorder.CodeInput, Text: truncateText(f["command"], maxMarkerText)})
			}
		}
	}
	if cs.Finished && st.Offset >= cs.Size {
		lines = st.In.Flush(st.Out.Flush(lines))
		st.Done = true
	}
	if room := s.cfg.MaxLinesPerSession - int(st.Seq); len(lines) > room {
		lines = lines[:max(room, 0)]
		st.Truncated = true
	}
	return st, lines, markers, nil
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

func putIndexState(tx *bolt.Tx, id string, st *indexState) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketIndexing).Put([]byte(id), raw)
}

// putText appends a batch of lines to the recording's segments (filling
// its last one, then starting new ones) and stores its markers numbered
// from mseq. st's Segs and SegLines are advanced.
func putText(tx *bolt.Tx, vs *valueSealer, enc *segEncoder, id string, start time.Time, st *indexState, lines []Line, mseq uint32, markers []Marker) error {
	sb, bb := tx.Bucket(bucketSegments), tx.Bucket(bucketBlocks)
	sb.FillPercent, bb.FillPercent = 0.9, 0.9 // keys grow with time: mostly appended
	doc := docKey(start, id)
	for len(lines) > 0 {
		if st.Segs == 0 || st.SegLines >= segMaxLines {
			st.Segs++
			st.SegLines = 0
		}
		seg := st.Segs - 1
		key := segKey(doc, seg)
		var old, tail []byte
		if st.SegLines > 0 {
			if old = sb.Get(key); old == nil {
				return fmt.Errorf("%w: segment %d of %s is missing", errSegment, seg, id)
			}
			var err error
			if old, err = vs.open(old); err != nil {
				return fmt.Errorf("%w: segment %d of %s: %w", errSegment, seg, id, err)
			}
			if st.SegLines%linesPerBlock != 0 {
				if tail = bb.Get(blockKey(doc, seg, st.SegLines/linesPerBlock)); tail == nil {
					return fmt.Errorf("%w: a block of segment %d of %s is missing", errSegment, seg, id)
				}
				if tail, err = vs.open(tail); err != nil {
					return fmt.Errorf("%w: segment %d of %s: %w", errSegment, seg, id, err)
				}
			}
		}
		n := min(len(lines), segMaxLines-int(st.SegLines))
		head, first, blocks, err := enc.appendSegment(old, tail, lines[:n])
		if err != nil {
			return err
		}
		if err := sb.Put(key, vs.seal(head)); err != nil {
			return err
		}
		for i, z := range blocks {
			if err := bb.Put(blockKey(doc, seg, uint32(first+i)), vs.seal(z)); err != nil {
				return err
			}
		}
		st.SegLines += uint32(n)
		lines = lines[n:]
	}
	mb := tx.Bucket(bucketMarkers)
	for i, m := range markers {
		if err := mb.Put(markerKey(id, mseq+uint32(i)), vs.seal(encodeMarkerValue(m.Time, m.Label))); err != nil {
			return err
		}
	}
	return nil
}

// docKey is a recording's prefix in bucketSegments: its start (nanoseconds,
// sign bit flipped so that the bytes sort as the times do), then its id
// with every byte inverted and a 0xff that ends it (inverted id bytes are
// never 0xff, ids hold no NUL). Walked from the last key, recordings come
// newest first and, among those that started at the same time, by id.
func docKey(start time.Time, id string) []byte {
	k := make([]byte, 0, 8+len(id)+1+4)
	k = binary.BigEndian.AppendUint64(k, uint64(start.UnixNano())^(1<<63))
	for i := 0; i < len(id); i++ {
		k = append(k, ^id[i])
	}
	return append(k, 0xff)
}

func segKey(doc []byte, seg uint32) []byte {
	return binary.BigEndian.AppendUint32(bytes.Clone(doc), seg)
}

func blockKey(doc []byte, seg, block uint32) []byte {
	return binary.BigEndian.AppendUint32(segKey(doc, seg), block)
}

// segDoc returns the doc key of a segment key.
func segDoc(k []byte) ([]byte, bool) {
	if len(k) < 8+1+1+4 || k[len(k)-5] != 0xff {
		return nil, false
	}
	return k[:len(k)-4], true
}

// docID returns the id of a doc key.
func docID(doc []byte) string {
	inv := doc[8 : len(doc)-1]
	b := make([]byte, len(inv))
	for i, c := range inv {
		b[i] = ^c
	}
	return string(b)
}

// parseSegKey returns the doc key and id of a segment key.
func parseSegKey(k []byte) (doc []byte, id string, ok bool) {
	doc, ok = segDoc(k)
	if !ok || bytes.IndexByte(doc[8:len(doc)-1], 0xff) >= 0 {
		return nil, "", false
	}
	return doc, docID(doc), true
}

func markerKey(id string, seq uint32) []byte {
	k := make([]byte, 0, len(id)+5)
	k = append(append(k, id...), 0)
	return binary.BigEndian.AppendUint32(k, seq)
}

func encodeMarkerValue(t float64, label string) []byte {
	v := make([]byte, 0, 9+len(label))
	v = binary.BigEndian.AppendUint64(v, math.Float64bits(t))
	return append(append(v, 'm'), label...)
}

func decodeMarkerValue(v []byte) (t float64, label string, ok bool) {
	if len(v) < 9 {
		return 0, "", false
	}
	return math.Float64frombits(binary.BigEndian.Uint64(v)), string(v[9:]), true
}

// dropTextLocked deletes a recording's segments, markers and index state,
// some segments per transaction. The caller holds its textLock.
func (s *Store) dropTextLocked(id string, start time.Time) error {
	doc := docKey(start, id)
	for {
		more := false
		err := s.sdb.Update(func(tx *bolt.Tx) error {
			more = false
			var keys [][]byte
			for _, b := range []*bolt.Bucket{tx.Bucket(bucketBlocks), tx.Bucket(bucketSegments)} {
				keys = keys[:0]
				c := b.Cursor()
				for k, _ := c.Seek(doc); k != nil && bytes.HasPrefix(k, doc) && (len(k) == len(doc)+4 || len(k) == len(doc)+8); k, _ = c.Next() {
					if len(keys) >= 1024 {
						more = true
						break
					}
					keys = append(keys, bytes.Clone(k))
				}
				for _, k := range keys {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				if more {
					return nil
				}
			}
			mb := tx.Bucket(bucketMarkers)
			prefix := append([]byte(id), 0)
			keys = keys[:0]
			mc := mb.Cursor()
			for k, _ := mc.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = mc.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				if err := mb.Delete(k); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketIndexing).Delete([]byte(id))
		})
		if err != nil {
			return fmt.Errorf("store: drop text of %s: %w", id, err)
		}
		if !more {
			return nil
		}
	}
}

// WaitIndexed waits until everything stored of the recording is indexed
// (all of it, once finished). For tests and benchmarks.
func (s *Store) WaitIndexed(ctx context.Context, id string) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		cs, _, err := s.Cast(id)
		if err != nil {
			return err
		}
		st, _, err := s.indexState(id)
		if err != nil {
			return err
		}
		if st.Generation == cs.Generation && (st.Done || !cs.Finished && st.Offset >= cs.Size) {
			return nil
		}
		s.idx.poke(id)
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: wait for index of %s: %w", id, ctx.Err())
		case <-t.C:
		}
	}
}
