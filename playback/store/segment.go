package store

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
)

// A segment is the search index of a run of lines of one recording (at most
// segMaxLines): the distinct words of those lines, each with the blocks of
// lines it is in (the segment's head, one key), and the lines themselves,
// compressed in blocks of linesPerBlock (one key each). A recording's words
// are stored once per segment, not once per line or per word and line, and
// its text compressed: the index stays well below the cast it comes from
// (TestIndexSmallerThanCasts). A live recording's last segment grows batch
// by batch: appendSegment writes its head and its last, partial block
// again, never the blocks before.
//
// Head (all integers uvarint unless said otherwise):
//
//	version     1 byte, segVersion
//	nLines
//	nTerms
//	termsLen, then the terms, sorted by their bytes, each
//	              shared (bytes in common with the previous term; 0 at a restart)
//	              suffixLen, suffix
//	              postLen, postings: the numbers of the blocks whose lines hold
//	              the term (ascending) as deltas, the first from 0
//	nRestarts, then nRestarts × uint32 little-endian: offset in the terms of
//	              every restartEvery-th term, for a binary search
//
// Block: a DEFLATE stream of linesPerBlock lines (the segment's last block
// may have fewer); a line is its code byte ('o' or 'i'), its time, textLen,
// text. A time of whole microseconds is zigzag(µs − the previous line's µs
// in the block) << 1; any other time is 1 then 8 bytes, its float64 bits
// little-endian.
const (
	segVersion     = 1
	segMaxLines    = 1024
	linesPerBlock  = 128
	restartEvery   = 16
	segMaxTermsLen = 1 << 30
)

// errSegment: a segment that does not decode (a damaged index).
var errSegment = errors.New("store: malformed search index segment")

// segment is a parsed segment head; its slices point into the value it was
// read from (valid for the transaction that read it).
type segment struct {
	nLines   int
	terms    []byte
	restarts []byte
}

// nBlocks is the number of blocks of the segment's lines.
func (sg *segment) nBlocks() int { return (sg.nLines + linesPerBlock - 1) / linesPerBlock }

// blockLines is the number of lines in block b.
func (sg *segment) blockLines(b int) int {
	return min(linesPerBlock, sg.nLines-b*linesPerBlock)
}

// readUvarint reads a uvarint from b at *i.
func readUvarint(b []byte, i *int) (int, bool) {
	if *i > len(b) {
		return 0, false
	}
	v, n := binary.Uvarint(b[*i:])
	if n <= 0 || v > math.MaxInt32 {
		return 0, false
	}
	*i += n
	return int(v), true
}

// readBytes reads n bytes from b at *i.
func readBytes(b []byte, i *int, n int) ([]byte, bool) {
	if n < 0 || *i+n > len(b) || *i+n < *i {
		return nil, false
	}
	out := b[*i : *i+n]
	*i += n
	return out, true
}

// parseSegment checks a segment head's frame (not its terms, which are
// checked as they are read).
func parseSegment(v []byte) (*segment, error) {
	sg := new(segment)
	if err := parseSegmentInto(sg, v); err != nil {
		return nil, err
	}
	return sg, nil
}

func parseSegmentInto(sg *segment, v []byte) error {
	if len(v) == 0 || v[0] != segVersion {
		return errSegment
	}
	i := 1
	var ok bool
	var termsLen, nRestarts int
	if sg.nLines, ok = readUvarint(v, &i); !ok || sg.nLines > segMaxLines {
		return errSegment
	}
	if _, ok = readUvarint(v, &i); !ok { // nTerms
		return errSegment
	}
	if termsLen, ok = readUvarint(v, &i); !ok {
		return errSegment
	}
	if sg.terms, ok = readBytes(v, &i, termsLen); !ok {
		return errSegment
	}
	if nRestarts, ok = readUvarint(v, &i); !ok {
		return errSegment
	}
	if sg.restarts, ok = readBytes(v, &i, 4*nRestarts); !ok || i != len(v) {
		return errSegment
	}
	return nil
}

// termIter walks the terms of a segment from an offset.
type termIter struct {
	terms    []byte
	i        int
	term     []byte // the current term (owned: reused between calls)
	postings []byte
}

// next decodes the next term; false at the end or on damage.
func (it *termIter) next() bool {
	if it.i >= len(it.terms) {
		return false
	}
	shared, ok := readUvarint(it.terms, &it.i)
	if !ok || shared > len(it.term) {
		return false
	}
	n, ok := readUvarint(it.terms, &it.i)
	if !ok {
		return false
	}
	suffix, ok := readBytes(it.terms, &it.i, n)
	if !ok {
		return false
	}
	it.term = append(it.term[:shared], suffix...)
	if n, ok = readUvarint(it.terms, &it.i); !ok {
		return false
	}
	it.postings, ok = readBytes(it.terms, &it.i, n)
	return ok
}

// restartTerm returns the term at restart r: shared is 0 there, so it is
// the suffix as stored.
func (sg *segment) restartTerm(r int) []byte {
	i := int(binary.LittleEndian.Uint32(sg.restarts[4*r:]))
	if shared, ok := readUvarint(sg.terms, &i); !ok || shared != 0 {
		return nil
	}
	n, ok := readUvarint(sg.terms, &i)
	if !ok {
		return nil
	}
	term, _ := readBytes(sg.terms, &i, n)
	return term
}

// lookup calls fn with the postings of every term that starts with prefix,
// in term order, until fn returns false. buf is reused for the terms.
func (sg *segment) lookup(prefix, buf []byte, fn func(term, postings []byte) bool) []byte {
	n := len(sg.restarts) / 4
	// The last restart whose term is below prefix: terms from there on are
	// the first that can match.
	r := sort.Search(n, func(r int) bool { return bytes.Compare(sg.restartTerm(r), prefix) >= 0 }) - 1
	it := termIter{terms: sg.terms, term: buf[:0]}
	if r > 0 {
		it.i = int(binary.LittleEndian.Uint32(sg.restarts[4*r:]))
	}
	for it.next() {
		switch c := bytes.Compare(it.term, prefix); {
		case c < 0:
			continue
		case !bytes.HasPrefix(it.term, prefix):
			return it.term
		}
		if !fn(it.term, it.postings) {
			return it.term
		}
	}
	return it.term
}

// decodePostings calls fn with each block number of postings, in order.
func decodePostings(postings []byte, fn func(block int) bool) {
	block, i := 0, 0
	for i < len(postings) {
		d, ok := readUvarint(postings, &i)
		if !ok || block+d > math.MaxInt32 {
			return
		}
		block += d
		if !fn(block) {
			return
		}
	}
}

// blockReader decompresses blocks, reusing its buffers.
type blockReader struct {
	zr  io.ReadCloser
	buf bytes.Buffer
}

// lines returns the want lines of block z.
func (br *blockReader) lines(z []byte, want int) ([]Line, error) {
	var lines []Line
	err := br.each(z, want, func(code byte, t float64, text []byte) bool {
		lines = append(lines, Line{Time: t, Code: string(code), Text: string(text)})
		return true
	})
	return lines, err
}

// each decompresses block z, which holds want lines, and calls fn with each
// line (text is valid during the call) until fn returns false.
func (br *blockReader) each(z []byte, want int, fn func(code byte, t float64, text []byte) bool) error {
	src := bytes.NewReader(z)
	if br.zr == nil {
		br.zr = flate.NewReader(src)
	} else if err := br.zr.(flate.Resetter).Reset(src, nil); err != nil {
		return err
	}
	br.buf.Reset()
	// A block holds at most linesPerBlock lines of MaxLineText bytes.
	if _, err := io.Copy(&br.buf, io.LimitReader(br.zr, linesPerBlock*(MaxLineText+32)+1)); err != nil {
		return fmt.Errorf("%w: %v", errSegment, err)
	}
	return eachLine(br.buf.Bytes(), want, fn)
}

// eachLine decodes the want lines of a decompressed block.
func eachLine(raw []byte, want int, fn func(code byte, t float64, text []byte) bool) error {
	i := 0
	var prev int64
	for n := 0; n < want; n++ {
		if i >= len(raw) {
			return errSegment
		}
		code := raw[i]
		i++
		if code != 'o' && code != 'i' {
			return errSegment
		}
		tag, k := binary.Uvarint(raw[i:])
		if k <= 0 {
			return errSegment
		}
		i += k
		var t float64
		if tag&1 == 0 {
			prev += zigzagDecode(tag >> 1)
			t = float64(prev) / 1e6
		} else {
			bits, ok := readBytes(raw, &i, 8)
			if !ok {
				return errSegment
			}
			t = math.Float64frombits(binary.LittleEndian.Uint64(bits))
		}
		tl, ok := readUvarint(raw, &i)
		if !ok {
			return errSegment
		}
		text, ok := readBytes(raw, &i, tl)
		if !ok {
			return errSegment
		}
		if !fn(code, t, text) {
			return nil
		}
	}
	if i != len(raw) {
		return errSegment
	}
	return nil
}

func zigzagEncode(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }
func zigzagDecode(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// micros returns t in whole microseconds when that is exact.
func micros(t float64) (int64, bool) {
	m := math.Round(t * 1e6)
	if m < 0 || m > 1<<52 || m/1e6 != t {
		return 0, false
	}
	return int64(m), true
}

func encodeBlock(dst []byte, lines []Line) []byte {
	var prev int64
	for _, l := range lines {
		code := byte('o')
		if l.Code == "i" {
			code = 'i'
		}
		dst = append(dst, code)
		if m, ok := micros(l.Time); ok {
			dst = binary.AppendUvarint(dst, zigzagEncode(m-prev)<<1)
			prev = m
		} else {
			dst = binary.AppendUvarint(dst, 1)
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(l.Time))
		}
		dst = binary.AppendUvarint(dst, uint64(len(l.Text)))
		dst = append(dst, l.Text...)
	}
	return dst
}

// segEncoder builds segments, reusing its compressor.
type segEncoder struct {
	zw  *flate.Writer
	raw []byte
	out bytes.Buffer
	br  blockReader
}

func (e *segEncoder) compress(lines []Line) ([]byte, error) {
	e.raw = encodeBlock(e.raw[:0], lines)
	e.out.Reset()
	if e.zw == nil {
		zw, err := flate.NewWriter(&e.out, flate.DefaultCompression)
		if err != nil {
			return nil, err
		}
		e.zw = zw
	} else {
		e.zw.Reset(&e.out)
	}
	if _, err := e.zw.Write(e.raw); err != nil {
		return nil, err
	}
	if err := e.zw.Close(); err != nil {
		return nil, err
	}
	return bytes.Clone(e.out.Bytes()), nil
}

// appendSegment appends add to the segment whose head is old (nil: a new
// segment) and whose last block, when partial, is tail. It returns the new
// head and the blocks to write from number first on (the old tail's number
// when there was one). Its words are decoded and written again with the new
// ones; only its last, partial block is compressed again.
func (e *segEncoder) appendSegment(old, tail []byte, add []Line) (head []byte, first int, blocks [][]byte, err error) {
	postings := map[string][]uint32{}
	var pending []Line
	base := 0
	if old != nil {
		sg, err := parseSegment(old)
		if err != nil {
			return nil, 0, nil, err
		}
		base = sg.nLines
		it := termIter{terms: sg.terms}
		for it.next() {
			var list []uint32
			decodePostings(it.postings, func(block int) bool {
				list = append(list, uint32(block))
				return true
			})
			postings[string(it.term)] = list
		}
		if it.i != len(sg.terms) {
			return nil, 0, nil, errSegment
		}
		if n := base % linesPerBlock; n != 0 {
			if pending, err = e.br.lines(tail, n); err != nil {
				return nil, 0, nil, err
			}
		}
	}
	if base+len(add) > segMaxLines {
		return nil, 0, nil, fmt.Errorf("store: segment of %d lines: more than %d", base+len(add), segMaxLines)
	}
	for i, l := range add {
		b := uint32((base + i) / linesPerBlock)
		for _, w := range Tokens(l.Text) {
			if list := postings[w]; len(list) == 0 || list[len(list)-1] != b {
				postings[w] = append(list, b)
			}
		}
	}
	first = base / linesPerBlock
	pending = append(pending, add...)
	for len(pending) > 0 {
		n := min(len(pending), linesPerBlock)
		z, err := e.compress(pending[:n])
		if err != nil {
			return nil, 0, nil, err
		}
		blocks = append(blocks, z)
		pending = pending[n:]
	}
	head, err = encodeSegment(base+len(add), postings)
	return head, first, blocks, err
}

func encodeSegment(nLines int, postings map[string][]uint32) ([]byte, error) {
	words := make([]string, 0, len(postings))
	for w := range postings {
		words = append(words, w)
	}
	slices.Sort(words)
	var terms []byte
	var restarts []byte
	prev := ""
	for i, w := range words {
		shared := 0
		if i%restartEvery == 0 {
			restarts = binary.LittleEndian.AppendUint32(restarts, uint32(len(terms)))
		} else {
			for shared < len(w) && shared < len(prev) && w[shared] == prev[shared] {
				shared++
			}
		}
		terms = binary.AppendUvarint(terms, uint64(shared))
		terms = binary.AppendUvarint(terms, uint64(len(w)-shared))
		terms = append(terms, w[shared:]...)
		var post []byte
		last := uint32(0)
		for _, l := range postings[w] {
			post = binary.AppendUvarint(post, uint64(l-last))
			last = l
		}
		terms = binary.AppendUvarint(terms, uint64(len(post)))
		terms = append(terms, post...)
		prev = w
	}
	if len(terms) > segMaxTermsLen {
		return nil, fmt.Errorf("store: segment words of %d bytes", len(terms))
	}
	v := make([]byte, 0, 1+4*binary.MaxVarintLen64+len(terms)+len(restarts))
	v = append(v, segVersion)
	v = binary.AppendUvarint(v, uint64(nLines))
	v = binary.AppendUvarint(v, uint64(len(words)))
	v = binary.AppendUvarint(v, uint64(len(terms)))
	v = append(v, terms...)
	v = binary.AppendUvarint(v, uint64(len(restarts)/4))
	v = append(v, restarts...)
	return v, nil
}

// segmentLines decodes every line of a segment, given its head and blocks
// (for tests and checks).
func segmentLines(head []byte, blocks [][]byte) ([]Line, error) {
	sg, err := parseSegment(head)
	if err != nil {
		return nil, err
	}
	if len(blocks) != sg.nBlocks() {
		return nil, errSegment
	}
	var br blockReader
	var out []Line
	for b, z := range blocks {
		lines, err := br.lines(z, sg.blockLines(b))
		if err != nil {
			return nil, err
		}
		out = append(out, lines...)
	}
	return out, nil
}
