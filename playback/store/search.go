package store

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sshward/sshward/recorder"
)

// The text index (text.db). While a recording arrives, a background
// indexer reads the new bytes of its cast, turns "o" and "i" events into
// lines (Extractor) and stores each line once (bucket lines: id ‖ 0 ‖ seq).
// Words are posted per batch of lines: one key per word, recording and
// batch (word ‖ 0 ‖ invTime(start) ‖ id ‖ 0 ‖ batch), whose value lists the
// line numbers (uvarint deltas), so that a word repeated on every line of
// a long session costs a key per batch, not per line. A search seeks to its
// longest word, walks the postings of every word with that prefix (newest
// recordings first) and checks each candidate line for the whole query: no
// query reads a cast.

// indexState is how far a recording is indexed; saved with every batch, in
// the same transaction as the batch's lines, so a crash repeats nothing.
type indexState struct {
	Offset     int64     `json:"offset"` // cast bytes indexed, at a line end
	Seq        uint32    `json:"seq"`    // next line number
	MSeq       uint32    `json:"mseq"`   // next marker number
	Batches    []uint32  `json:"batches,omitempty"`
	Generation int       `json:"generation"`
	Out        Extractor `json:"out"`
	In         Extractor `json:"in"`
	Done       bool      `json:"done"`
	Truncated  bool      `json:"truncated,omitempty"` // MaxLinesPerSession reached
}

func newIndexState(gen int) indexState {
	return indexState{Generation: gen, Out: Extractor{Code: recorder.CodeOutput}, In: Extractor{Code: recorder.CodeInput}}
}

// Batch bounds of one indexing transaction: big enough to share postings,
// small enough to keep a transaction's memory and duration modest.
const (
	indexBatchBytes = 4 << 20
	indexBatchLines = 5000
	maxMarkerText   = 512
)

type indexer struct {
	s *Store

	mu    sync.Mutex // guards dirty
	dirty map[string]bool

	wake chan struct{} // capacity 1
	quit chan struct{} // closed by stop
	done chan struct{} // closed when run returns
}

func newIndexer(s *Store) *indexer {
	return &indexer{s: s, dirty: map[string]bool{}, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// resume queues every recording not completely indexed.
func (x *indexer) resume(ctx context.Context) error {
	return x.s.db.View(func(tx *bolt.Tx) error {
		return x.s.tdb.View(func(ttx *bolt.Tx) error {
			states := ttx.Bucket(bucketIndexing)
			return tx.Bucket(bucketSessions).ForEach(func(k, _ []byte) error {
				var st indexState
				if raw := states.Get(k); raw == nil || json.Unmarshal(raw, &st) != nil || !st.Done {
					x.dirty[string(k)] = true
				}
				return ctx.Err()
			})
		})
	})
}

func (x *indexer) poke(id string) {
	x.mu.Lock()
	x.dirty[id] = true
	x.mu.Unlock()
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

func (x *indexer) stop() {
	close(x.quit)
	<-x.done
}

func (x *indexer) run() {
	defer close(x.done)
	x.poke("") // start with what resume queued
	for {
		select {
		case <-x.quit:
			return
		case <-x.wake:
		}
		x.mu.Lock()
		dirty := x.dirty
		x.dirty = map[string]bool{}
		x.mu.Unlock()
		for id := range dirty {
			select {
			case <-x.quit:
				return
			default:
			}
			if id == "" {
				continue
			}
			if err := x.s.indexSession(id, x.quit); err != nil && !errors.Is(err, ErrClosed) {
				x.s.cfg.Logger.Error("store: indexing failed", "session_id", id, "err", err)
			}
		}
	}
}

// errStale: the recording changed (discarded or deleted) under a batch.
var errStale = errors.New("store: recording changed while indexing")

func (s *Store) indexState(id string) (indexState, bool, error) {
	var st indexState
	found := false
	err := s.tdb.View(func(tx *bolt.Tx) error {
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
func (s *Store) indexSession(id string, quit <-chan struct{}) error {
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
		err = s.commitText(id, rec.Start, st, next, lines, markers)
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
func (s *Store) commitText(id string, start time.Time, st, next indexState, lines []Line, markers []Marker) error {
	mu := s.textLock(id)
	mu.Lock()
	defer mu.Unlock()
	r, err := s.getRecord(id)
	if err != nil || r.Deleting || r.Generation != st.Generation {
		return errStale
	}
	next.Seq = st.Seq + uint32(len(lines))
	next.MSeq = st.MSeq + uint32(len(markers))
	if len(lines) > 0 {
		next.Batches = append(slices.Clip(st.Batches), st.Seq)
	}
	return s.tdb.Update(func(tx *bolt.Tx) error {
		if err := putText(tx, id, start, st, lines, markers); err != nil {
			return err
		}
		return putIndexState(tx, id, &next)
	})
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
	return s.tdb.Update(func(tx *bolt.Tx) error { return putIndexState(tx, id, &fresh) })
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

// putText stores a batch of lines and markers numbered from st's sequences,
// and the batch's postings under the batch's first line number.
func putText(tx *bolt.Tx, id string, start time.Time, st indexState, lines []Line, markers []Marker) error {
	lb, pb, mb := tx.Bucket(bucketLines), tx.Bucket(bucketPostings), tx.Bucket(bucketMarkers)
	inv := invTime(start)
	seqs := map[string][]uint32{}
	for i, l := range lines {
		seq := st.Seq + uint32(i)
		if err := lb.Put(lineKey(id, seq), encodeLineValue(l.Time, l.Code, l.Text)); err != nil {
			return err
		}
		for _, w := range Tokens(l.Text) {
			seqs[w] = append(seqs[w], seq)
		}
	}
	for w, list := range seqs {
		if err := pb.Put(postingKey(w, inv, id, st.Seq), encodeSeqs(st.Seq, list)); err != nil {
			return err
		}
	}
	for i, m := range markers {
		if err := mb.Put(lineKey(id, st.MSeq+uint32(i)), encodeLineValue(m.Time, recorder.CodeMarker, m.Label)); err != nil {
			return err
		}
	}
	return nil
}

// encodeSeqs writes ascending line numbers as uvarint deltas from base.
func encodeSeqs(base uint32, seqs []uint32) []byte {
	v := make([]byte, 0, len(seqs)*2)
	prev := base
	for _, s := range seqs {
		v = binary.AppendUvarint(v, uint64(s-prev))
		prev = s
	}
	return v
}

// decodeSeqs reads encodeSeqs; it stops at the first malformed number.
func decodeSeqs(base uint32, v []byte, fn func(seq uint32) bool) {
	prev := uint64(base)
	for len(v) > 0 {
		d, n := binary.Uvarint(v)
		if n <= 0 || prev+d > math.MaxUint32 {
			return
		}
		v = v[n:]
		prev += d
		if !fn(uint32(prev)) {
			return
		}
	}
}

func lineKey(id string, seq uint32) []byte {
	k := make([]byte, 0, len(id)+5)
	k = append(append(k, id...), 0)
	return binary.BigEndian.AppendUint32(k, seq)
}

func postingKey(word string, inv []byte, id string, batch uint32) []byte {
	k := make([]byte, 0, len(word)+len(id)+14)
	k = append(append(k, word...), 0)
	k = append(append(k, inv...), id...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint32(k, batch)
}

// parsePostingKey splits a posting key (see postingKey).
func parsePostingKey(k []byte) (word []byte, id string, batch uint32, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i < 0 || len(k) < i+1+8+1+1+4 {
		return nil, "", 0, false
	}
	rest := k[i+1+8:]
	if rest[len(rest)-5] != 0 {
		return nil, "", 0, false
	}
	return k[:i], string(rest[:len(rest)-5]), binary.BigEndian.Uint32(rest[len(rest)-4:]), true
}

func encodeLineValue(t float64, code, text string) []byte {
	v := make([]byte, 0, 9+len(text))
	v = binary.BigEndian.AppendUint64(v, math.Float64bits(t))
	c := byte('o')
	if code != "" {
		c = code[0]
	}
	return append(append(v, c), text...)
}

func decodeLineValue(v []byte) (t float64, code, text string, ok bool) {
	if len(v) < 9 {
		return 0, "", "", false
	}
	return math.Float64frombits(binary.BigEndian.Uint64(v)), string(v[8:9]), string(v[9:]), true
}

func hasPrefix(b, prefix []byte) bool { return bytes.HasPrefix(b, prefix) }

// dropTextLocked deletes a recording's lines, postings, markers and index
// state, a batch of lines per transaction. The caller holds its textLock.
func (s *Store) dropTextLocked(id string, start time.Time) error {
	st, _, err := s.indexState(id)
	if err != nil {
		return err
	}
	inv := invTime(start)
	prefix := append([]byte(id), 0)
	batchOf := func(seq uint32) uint32 {
		i, found := slices.BinarySearch(st.Batches, seq)
		if !found && i > 0 {
			i--
		}
		if i < len(st.Batches) {
			return st.Batches[i]
		}
		return 0
	}
	for {
		more := false
		err := s.tdb.Update(func(tx *bolt.Tx) error {
			more = false
			lb, pb := tx.Bucket(bucketLines), tx.Bucket(bucketPostings)
			c := lb.Cursor()
			var keys [][]byte
			for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
				if len(keys) >= indexBatchLines {
					more = true
					break
				}
				seq := binary.BigEndian.Uint32(k[len(k)-4:])
				_, _, text, _ := decodeLineValue(v)
				for _, w := range Tokens(text) {
					if err := pb.Delete(postingKey(w, inv, id, batchOf(seq))); err != nil {
						return err
					}
				}
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				if err := lb.Delete(k); err != nil {
					return err
				}
			}
			if more {
				return nil
			}
			mb := tx.Bucket(bucketMarkers)
			keys = keys[:0]
			mc := mb.Cursor()
			for k, _ := mc.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = mc.Next() {
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

// Hit is a line that matches a search.
type Hit struct {
	SessionID string  `json:"session_id"`
	Time      float64 `json:"time"` // seconds since the recording's start
	Code      string  `json:"code"` // "o" output or "i" input
	Text      string  `json:"text"`
}

// Query is a full-text search.
type Query struct {
	// Text is matched case-insensitively as a phrase (runs of white space
	// are one space) at the start of a word: "passw" finds "passwd".
	Text string
	// Limit bounds the hits (default 100); PerSession the hits of one
	// recording (default 20).
	Limit, PerSession int
	// Filter, when set, keeps only the recordings it accepts.
	Filter func(*Record) bool
	// MaxScan bounds the postings walked (default 1,000,000), which bounds
	// the time of a query for a very common word.
	MaxScan int
}

// Search finds lines of output or recorded input, newest recordings first.
func (s *Store) Search(ctx context.Context, q Query) ([]Hit, error) {
	words := Tokens(q.Text)
	if len(words) == 0 {
		return nil, ErrQuery
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	if q.PerSession <= 0 {
		q.PerSession = 20
	}
	if q.MaxScan <= 0 {
		q.MaxScan = 1_000_000
	}
	driver := words[0]
	for _, w := range words[1:] {
		if len(w) >= len(driver) {
			driver = w
		}
	}
	phrase := normalize(q.Text)
	hits := []Hit{}
	err := s.db.View(func(itx *bolt.Tx) error {
		sessions := itx.Bucket(bucketSessions)
		return s.tdb.View(func(tx *bolt.Tx) error {
			lb := tx.Bucket(bucketLines)
			allowed := map[string]bool{}
			perSession := map[string]int{}
			seen := map[string]bool{}
			c := tx.Bucket(bucketPostings).Cursor()
			prefix := []byte(driver)
			scanned := 0
			full := false
			for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix) && !full && scanned < q.MaxScan; k, v = c.Next() {
				if scanned++; scanned%1024 == 0 && ctx.Err() != nil {
					return ctx.Err()
				}
				_, id, batch, ok := parsePostingKey(k)
				if !ok {
					continue
				}
				ok, known := allowed[id]
				if !known {
					ok = s.searchable(sessions, id, q.Filter)
					allowed[id] = ok
				}
				if !ok || perSession[id] >= q.PerSession {
					continue
				}
				decodeSeqs(batch, v, func(seq uint32) bool {
					scanned++
					lk := lineKey(id, seq)
					if seen[string(lk)] {
						return true
					}
					t, code, text, ok := decodeLineValue(lb.Get(lk))
					if !ok || !strings.Contains(normalize(text), phrase) {
						return true
					}
					seen[string(lk)] = true
					perSession[id]++
					hits = append(hits, Hit{SessionID: id, Time: t, Code: code, Text: text})
					full = len(hits) >= q.Limit
					return !full && perSession[id] < q.PerSession
				})
			}
			// Hits of one recording come in line order from its batches,
			// but a prefix may match several words: put them back in order.
			rank := map[string]int{}
			for _, h := range hits {
				if _, ok := rank[h.SessionID]; !ok {
					rank[h.SessionID] = len(rank)
				}
			}
			slices.SortStableFunc(hits, func(a, b Hit) int {
				return cmp.Or(cmp.Compare(rank[a.SessionID], rank[b.SessionID]), cmp.Compare(a.Time, b.Time))
			})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: search: %w", err)
	}
	return hits, nil
}

func (s *Store) searchable(sessions *bolt.Bucket, id string, filter func(*Record) bool) bool {
	raw := sessions.Get([]byte(id))
	if raw == nil {
		return false
	}
	var r Record
	if json.Unmarshal(raw, &r) != nil || r.Deleting {
		return false
	}
	return filter == nil || filter(&r)
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
