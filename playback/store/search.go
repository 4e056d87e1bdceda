package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

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
	// MaxScan bounds the blocks of lines (linesPerBlock each) a query
	// decompresses and checks (default 10,000: about as many lines as the
	// million postings earlier versions walked), which bounds the time of
	// a query for a very common word.
	MaxScan int
}

// Search finds lines of output or recorded input, newest recordings first,
// each recording's hits in time order. It walks the recordings' segments
// from the newest, looks up in each the words that start with the query's
// longest word, and checks each line they are on for the whole phrase: no
// query reads a cast. Recordings not indexed yet (IndexStatus) are not
// found.
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
		q.MaxScan = 10_000
	}
	driver := words[0]
	for _, w := range words[1:] {
		if len(w) >= len(driver) {
			driver = w
		}
	}
	sr := &searcher{vs: s.vs, q: q, driver: []byte(driver), phrase: normalize(q.Text), hits: []Hit{}}
	err := s.db.View(func(itx *bolt.Tx) error {
		sessions := itx.Bucket(bucketSessions)
		sr.allowed = func(id string) bool { return s.searchable(sessions, id, q.Filter) }
		return s.sdb.View(func(tx *bolt.Tx) error {
			// Walk the segments from the last key: a recording's segments
			// come last first, then the recording before it.
			c := tx.Bucket(bucketSegments).Cursor()
			sr.blocksOf = tx.Bucket(bucketBlocks)
			var segs []segRef
			n := 0
			k, v := c.Last()
			for k != nil && !sr.done() {
				if n++; n%256 == 0 && ctx.Err() != nil {
					return ctx.Err()
				}
				doc, ok := segDoc(k)
				if !ok {
					k, v = c.Prev()
					continue
				}
				segs = segs[:0]
				for ; k != nil && len(k) == len(doc)+4 && bytes.HasPrefix(k, doc); k, v = c.Prev() {
					segs = append(segs, segRef{key: k, head: v})
				}
				slices.Reverse(segs)
				sr.session(doc, segs)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: search: %w", err)
	}
	return sr.hits, nil
}

// segRef is a segment head and its key.
type segRef struct{ key, head []byte }

// searcher is the state of one Search.
type searcher struct {
	vs       *valueSealer
	blocksOf *bolt.Bucket
	q        Query
	driver   []byte
	phrase   string
	allowed  func(id string) bool
	hits     []Hit
	scanned  int
	br       blockReader
	cand     []int
	term     []byte
	key      []byte
}

func (sr *searcher) done() bool {
	return len(sr.hits) >= sr.q.Limit || sr.scanned >= sr.q.MaxScan
}

// session adds the hits of one recording, from its segments in order. The
// recording's record is read (and Filter asked) only once a segment has
// the query's longest word.
func (sr *searcher) session(doc []byte, segs []segRef) {
	first := len(sr.hits)
	checked := false
	id := ""
	for _, ref := range segs {
		var sg segment
		head, err := sr.vs.open(ref.head)
		if err != nil || parseSegmentInto(&sg, head) != nil {
			continue // a damaged segment: nothing to find in it
		}
		sr.cand = sr.cand[:0]
		sr.term = sg.lookup(sr.driver, sr.term, func(_, postings []byte) bool {
			decodePostings(postings, func(block int) bool {
				sr.cand = append(sr.cand, block)
				sr.scanned++
				return sr.scanned < sr.q.MaxScan
			})
			return sr.scanned < sr.q.MaxScan
		})
		if len(sr.cand) == 0 {
			if sr.done() {
				break
			}
			continue
		}
		if !checked {
			id = docID(doc)
			if !sr.allowed(id) {
				return
			}
			checked = true
		}
		if sr.blocks(&sg, ref.key, id, first) {
			break
		}
	}
	// A prefix may match several words: put the recording's hits in time
	// order.
	slices.SortStableFunc(sr.hits[first:], func(a, b Hit) int { return cmp.Compare(a.Time, b.Time) })
}

// blocks adds the hits of the candidate blocks of a segment; true when the
// recording (or the search) has all the hits it may have.
func (sr *searcher) blocks(sg *segment, key []byte, id string, first int) bool {
	slices.Sort(sr.cand)
	full := false
	for _, b := range slices.Compact(sr.cand) {
		if b >= sg.nBlocks() {
			break
		}
		z := sr.blocksOf.Get(binary.BigEndian.AppendUint32(append(sr.key[:0], key...), uint32(b)))
		z, err := sr.vs.open(z)
		if z == nil || err != nil {
			continue // a damaged index: nothing to find there
		}
		err = sr.br.each(z, sg.blockLines(b), func(code byte, t float64, text []byte) bool {
			// The line must hold the phrase, and a word that starts with
			// the query's longest word (what finds a line: "xfoo bar"
			// holds "foo bar" but no word starting with "foo"). Most lines
			// of a block do not hold that word at all: a byte compare
			// tells first.
			if !mayContainFold(text, sr.driver) {
				return true
			}
			s := string(text)
			if !strings.Contains(normalize(s), sr.phrase) || !hasWordPrefix(s, sr.driver) {
				return true
			}
			sr.hits = append(sr.hits, Hit{SessionID: id, Time: t, Code: string(code), Text: s})
			full = len(sr.hits) >= sr.q.Limit || len(sr.hits)-first >= sr.q.PerSession
			return !full
		})
		if err != nil || full {
			return full
		}
	}
	return sr.done()
}

// mayContainFold reports whether text may hold word (lowercase) in any case:
// false only when text is ASCII and does not. Tokens lowercases with
// unicode rules, so text with other bytes is left to the exact check.
func mayContainFold(text, word []byte) bool {
	if len(word) == 0 {
		return true
	}
	for i := 0; i+len(word) <= len(text); i++ {
		j := 0
		for ; j < len(word); j++ {
			c := text[i+j]
			if c >= 0x80 {
				return true
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != word[j] {
				break
			}
		}
		if j == len(word) {
			return true
		}
	}
	for _, c := range text {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// hasWordPrefix reports whether a word of text (Tokens) starts with prefix.
func hasWordPrefix(text string, prefix []byte) bool {
	for _, w := range Tokens(text) {
		if strings.HasPrefix(w, string(prefix)) {
			return true
		}
	}
	return false
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
