package recorder

import (
	"bytes"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"unicode/utf8"
)

// Redaction keeps secrets out of recordings: bytes of a session (output and
// input alike) that match one of its patterns are replaced by the fixed
// text "[REDACTED:name]" before they reach the Writer's line, so before
// they reach the disk.
//
// Matching is streaming. A match may span reads: when the bytes at the end
// of a read could still become a match, the recorder holds them back (the
// carry) and decides with the next read. The carry is bounded by the
// window (NewRedaction's maxMatch); a candidate still undecided past that
// bound, or over two spool flushes (Writer.TickRedaction), is redacted as
// a whole from its literal start until the pattern can no longer match
// (fail safe: over-redaction, never a leak). Only a proper prefix of a
// pattern's literal start (a few bytes such as "AKI" or "-----BEG") may
// wait longer, for the next read or the end of the session.
//
// Semantics are those of one RE2 alternation of the patterns, leftmost-first
// (Perl), as regexp.FindAllIndex: scanning from the left, at each position
// the first pattern (in order) that matches wins and scanning resumes after
// its match. Empty matches are never redacted.
//
// A Redaction is immutable and safe for concurrent use; each stream of a
// recording keeps its own carry.
type Redaction struct {
	pats     []redactPattern
	keys     [][]byte // what the scan looks for: literal starts, shared ones merged
	keyOff   []int    // per key: the offset of its rarest byte, which the scan looks for first
	needles  []byte   // the distinct rarest bytes: one IndexByte pass each per read
	needleOf []int    // per key: its needle's index
	keyOf    []int    // per pattern: its key
	maxMatch int
}

// RedactPattern is one configured pattern.
type RedactPattern struct {
	// Name labels the replacement, "[REDACTED:Name]": 1 to 32 of a-z, 0-9,
	// '-' and '_'. Several patterns may share a name.
	Name string `json:"name" yaml:"name"`
	// Regexp is RE2 syntax (package regexp). It must begin with literal
	// text ("AKIA", "-----BEGIN"): the recorder looks for that text first,
	// which keeps redaction off the hot path of ordinary output.
	Regexp string `json:"regexp" yaml:"regexp"`
}

// DefaultRedactWindow is the default MaxMatch: the longest match kept
// whole across reads. A PEM RSA-8192 private key is about 6.5 KiB.
const DefaultRedactWindow = 8 << 10

// maxRedactPatterns and maxRedactProg bound what a configuration may cost.
const (
	maxRedactPatterns = 64
	maxRedactProg     = 2000 // instructions of one compiled pattern
)

// DefaultRedactPatterns are the patterns every recording applies unless
// configured otherwise: private key blocks, AWS access key ids, GitHub and
// Slack tokens, HTTP bearer tokens. Each literal start is long enough
// ("ghp_", not "gh") that a word typed at a prompt is not taken for the
// start of a secret.
func DefaultRedactPatterns() []RedactPattern {
	return []RedactPattern{
		{Name: "private-key", Regexp: `-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----(?s:.)*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----`},
		{Name: "aws-access-key", Regexp: `AKIA[0-9A-Z]{16}`},
		{Name: "aws-access-key", Regexp: `ASIA[0-9A-Z]{16}`},
		{Name: "github-token", Regexp: `ghp_[A-Za-z0-9]{36,}`},
		{Name: "github-token", Regexp: `gho_[A-Za-z0-9]{36,}`},
		{Name: "github-token", Regexp: `ghu_[A-Za-z0-9]{36,}`},
		{Name: "github-token", Regexp: `ghs_[A-Za-z0-9]{36,}`},
		{Name: "github-token", Regexp: `ghr_[A-Za-z0-9]{36,}`},
		{Name: "github-token", Regexp: `github_pat_[A-Za-z0-9_]{22,}`},
		{Name: "slack-token", Regexp: `xoxb-[A-Za-z0-9-]{10,}`},
		{Name: "slack-token", Regexp: `xoxp-[A-Za-z0-9-]{10,}`},
		{Name: "slack-token", Regexp: `xoxa-[A-Za-z0-9-]{10,}`},
		{Name: "slack-token", Regexp: `xoxe-[A-Za-z0-9-]{10,}`},
		{Name: "slack-token", Regexp: `xoxo-[A-Za-z0-9-]{10,}`},
		{Name: "slack-token", Regexp: `xoxs-[A-Za-z0-9-]{10,}`},
		{Name: "slack-token", Regexp: `xoxr-[A-Za-z0-9-]{10,}`},
		{Name: "bearer-token", Regexp: `Bearer [A-Za-z0-9._~+/-]{16,}=*`},
		{Name: "bearer-token", Regexp: `bearer [A-Za-z0-9._~+/-]{16,}=*`},
	}
}

type redactPattern struct {
	name        string
	replacement []byte
	prefix      []byte
	prog        *syntax.Prog
}

// NewRedaction compiles patterns; maxMatch 0 means DefaultRedactWindow.
// The error names the bad pattern.
func NewRedaction(patterns []RedactPattern, maxMatch int) (*Redaction, error) {
	if maxMatch == 0 {
		maxMatch = DefaultRedactWindow
	}
	if maxMatch < 64 || maxMatch > 1<<20 {
		return nil, fmt.Errorf("recorder: redaction: window %d out of range 64..%d", maxMatch, 1<<20)
	}
	if len(patterns) > maxRedactPatterns {
		return nil, fmt.Errorf("recorder: redaction: %d patterns, at most %d", len(patterns), maxRedactPatterns)
	}
	rd := &Redaction{maxMatch: maxMatch}
	for _, p := range patterns {
		cp, err := compileRedactPattern(p)
		if err != nil {
			return nil, err
		}
		rd.pats = append(rd.pats, cp)
		// Patterns whose literal starts share three bytes or more share one
		// search ("xox" for xoxb-, xoxp- …): fewer passes over every read.
		// (bytes.Index is slow for two-byte needles: "gh" stays apart.)
		k := slices.IndexFunc(rd.keys, func(key []byte) bool { return commonPrefix(key, cp.prefix) >= 3 })
		if k < 0 {
			rd.keys = append(rd.keys, cp.prefix)
			k = len(rd.keys) - 1
		} else {
			rd.keys[k] = rd.keys[k][:commonPrefix(rd.keys[k], cp.prefix)]
		}
		rd.keyOf = append(rd.keyOf, k)
	}
	for _, key := range rd.keys {
		// The scan looks for the key's rarest byte with IndexByte (many
		// GB/s) and checks the rest around each hit: "-----BEGIN" is found
		// by its 'B', not by the dashes of every ls -l line.
		off := 0
		for i := range key {
			if byteRank(key[i]) < byteRank(key[off]) {
				off = i
			}
		}
		rd.keyOff = append(rd.keyOff, off)
		if byteRank(key[off]) >= 7 {
			// No rare byte: bytes.Index, which turns to a vector search
			// when the first byte hits too often.
			rd.needleOf = append(rd.needleOf, -1)
			continue
		}
		n := bytes.IndexByte(rd.needles, key[off])
		if n < 0 {
			rd.needles = append(rd.needles, key[off])
			n = len(rd.needles) - 1
		}
		rd.needleOf = append(rd.needleOf, n)
	}
	return rd, nil
}

// String returns s with every match redacted, as a whole (not streamed):
// for command lines and other text recorded outside the output and input
// streams. A nil Redaction returns s.
func (rd *Redaction) String(s string) string {
	if rd == nil || len(rd.pats) == 0 || s == "" {
		return s
	}
	return string(newRedactor(rd).write([]byte(s), true))
}

// MustDefaultRedaction is the Redaction of DefaultRedactPatterns.
func MustDefaultRedaction() *Redaction {
	rd, err := NewRedaction(DefaultRedactPatterns(), 0)
	if err != nil {
		panic(err)
	}
	return rd
}

func compileRedactPattern(p RedactPattern) (redactPattern, error) {
	bad := func(why string, args ...any) (redactPattern, error) {
		return redactPattern{}, fmt.Errorf("recorder: redaction pattern %q (%s): %s", p.Name, p.Regexp, fmt.Sprintf(why, args...))
	}
	if len(p.Name) == 0 || len(p.Name) > 32 {
		return bad("name must be 1 to 32 characters")
	}
	for _, r := range p.Name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return bad("name may hold only a-z, 0-9, '-' and '_'")
		}
	}
	re, err := regexp.Compile(p.Regexp)
	if err != nil {
		return bad("%v", err)
	}
	prefix, _ := re.LiteralPrefix()
	if prefix == "" {
		return bad("it must begin with literal text, e.g. token_[A-Za-z0-9]{20}")
	}
	if m := re.FindStringIndex(""); m != nil {
		return bad("it matches empty text")
	}
	sre, err := syntax.Parse(p.Regexp, syntax.Perl)
	if err != nil {
		return bad("%v", err)
	}
	prog, err := syntax.Compile(sre.Simplify())
	if err != nil {
		return bad("%v", err)
	}
	if len(prog.Inst) > maxRedactProg {
		return bad("too large (%d instructions, at most %d)", len(prog.Inst), maxRedactProg)
	}
	return redactPattern{name: p.Name, replacement: []byte("[REDACTED:" + p.Name + "]"),
		prefix: []byte(prefix), prog: prog}, nil
}

// redactor is the streaming state of one stream (output or input).
//
// Every byte goes through each pattern's machine at most once per
// candidate: an undecided candidate keeps its machine's state between
// reads, so that a secret arriving a byte at a time costs no more than one
// arriving at once.
type redactor struct {
	rd   *Redaction
	held []byte // the carry: starts at an undecided candidate (drop mode: a split rune)
	prev rune   // last rune given out or dropped before held (-1: none)
	out  []byte // result buffer, reused

	// With held non-empty and not in drop mode: pattern hpat is undecided
	// at held[0], its machine r.ms[hpat] has consumed held[:hfed]; ticked
	// says a flush tick has seen this candidate already.
	hpat, hfed int
	ticked     bool

	// drop is set in drop mode: a candidate is being redacted as a whole
	// (past the window, or past a flush); its machine runs on until the
	// pattern cannot match.
	drop *machine

	next []int      // per search key: next candidate in the scan buffer (-1 none)
	at   []int      // per search key: index into its needle's hits where the search goes on
	hits [][]int    // per needle: its positions in the scan buffer, ascending
	ms   []*machine // per pattern, made when first needed (an idle session holds none)
}

func newRedactor(rd *Redaction) *redactor {
	return &redactor{rd: rd, prev: -1, next: make([]int, len(rd.keys)), at: make([]int, len(rd.keys)),
		hits: make([][]int, len(rd.needles)), ms: make([]*machine, len(rd.pats))}
}

// machine returns pattern i's machine.
func (r *redactor) machine(i int) *machine {
	if r.ms[i] == nil {
		r.ms[i] = newMachine(r.rd.pats[i].prog)
	}
	return r.ms[i]
}

// write takes the next bytes of the stream and returns what may be
// recorded now. The result is valid until the next call and may alias p.
// final says the stream ends: nothing is held back after it.
func (r *redactor) write(p []byte, final bool) []byte {
	r.out = r.out[:0]
	buf := p
	if len(r.held) > 0 {
		r.held = append(r.held, p...)
		buf = r.held
	}
	skip := 0
	switch {
	case r.drop != nil:
		before := r.drop.off
		n, done := r.drop.feed(buf, final)
		if !done {
			// Still inside the secret: drop it, keeping a split rune.
			r.prev = lastRune(buf[:n], r.prev)
			r.held = append(r.held[:0], buf[n:]...)
			return nil
		}
		// Resume after the match if one ended here (the threads that ran
		// on past it were not the secret), else where the pattern died.
		resume := n
		if m := r.drop.matchEnd; m >= 0 {
			resume = max(m-before, 0)
		}
		r.prev = lastRune(buf[:resume], r.prev)
		r.drop = nil
		buf = buf[resume:]
	case len(buf) > 0 && len(r.held) > 0:
		// An undecided candidate at buf[0]: go on where its machine stopped.
		i := r.hpat
		m := r.machine(i)
		n, done := m.feed(buf[r.hfed:], final)
		r.hfed += n
		if !done {
			if len(buf) < r.rd.maxMatch {
				return nil // r.held is buf
			}
			r.out = append(r.out, r.rd.pats[i].replacement...)
			r.startDrop(i, buf[:r.hfed])
			r.held = append(r.held[:0], buf[r.hfed:]...)
			return r.out
		}
		if m.matchEnd > 0 {
			r.out = append(r.out, r.rd.pats[i].replacement...)
			r.prev = lastRune(buf[:m.matchEnd], r.prev)
			buf = buf[m.matchEnd:]
		} else {
			skip = i + 1 // patterns up to i do not match at buf[0]
		}
	}
	res, hold := r.scan(buf, final, skip)
	if hold >= 0 {
		// buf may alias r.held; res never does when holding.
		r.held = append(r.held[:0], buf[hold:]...)
	} else {
		if len(r.held) > 0 && len(res) > 0 && len(buf) > 0 && &res[0] == &buf[0] {
			r.out = append(r.out[:0], res...) // res aliases r.held
			res = r.out
		}
		r.held = r.held[:0]
	}
	if cap(r.held) > 2*r.rd.maxMatch {
		r.held = append([]byte(nil), r.held...)
	}
	return res
}

// startDrop enters drop mode with pattern i's machine, which has consumed
// dropped.
func (r *redactor) startDrop(i int, dropped []byte) {
	r.prev = lastRune(dropped, r.prev)
	r.drop = r.machine(i)
	r.ms[i] = nil // the dropping machine keeps its state
}

// tick is the flush rule: a candidate held since the previous tick that
// has passed its literal start is redacted as a whole now (drop mode), so
// that the carry never delays the recording by more than two flush
// intervals (one would redact "Bearer " cut from its next word by a flush
// that happened to fall between two reads). A proper prefix of a literal
// start stays held.
func (r *redactor) tick() []byte {
	if len(r.held) == 0 || r.drop != nil {
		return nil
	}
	if !r.ticked {
		r.ticked = true
		return nil
	}
	p := r.rd.pats[r.hpat]
	if len(r.held) < len(p.prefix) {
		return nil
	}
	r.out = append(r.out[:0], p.replacement...)
	r.startDrop(r.hpat, r.held[:r.hfed])
	r.held = append(r.held[:0], r.held[r.hfed:]...)
	return r.out
}

// scan redacts buf, appending to r.out, and returns the bytes to record and
// the offset from which buf must be held (-1: nothing held). Patterns
// below skip are known not to match at buf[0]. It may enter drop mode.
func (r *redactor) scan(buf []byte, final bool, skip int) ([]byte, int) {
	pats, keys, keyOf := r.rd.pats, r.rd.keys, r.rd.keyOf
	for n, b := range r.rd.needles {
		h := r.hits[n][:0]
		for from := 0; ; {
			i := bytes.IndexByte(buf[from:], b)
			if i < 0 {
				break
			}
			h = append(h, from+i)
			from += i + 1
		}
		r.hits[n] = h
	}
	found := false
	for k := range keys {
		r.at[k] = 0
		r.next[k] = r.candidate(buf, 0, k, final)
		found = found || r.next[k] >= 0
	}
	if !found { // the common case: no literal start at all
		r.prev = lastRune(buf, r.prev)
		if len(r.out) == 0 {
			return buf, -1
		}
		r.out = append(r.out, buf...)
		return r.out, -1
	}
	emit := 0 // buf[emit:] not yet given out
	pos := 0  // scanning resumes here
	for {
		c := -1
		for k := range keys {
			if r.next[k] >= 0 && r.next[k] < pos {
				r.next[k] = r.candidate(buf, pos, k, final)
			}
			if n := r.next[k]; n >= 0 && (c < 0 || n < c) {
				c = n
			}
		}
		if c < 0 {
			break
		}
		prev := r.prev
		if c > 0 {
			prev, _ = utf8.DecodeLastRune(buf[:c])
		}
		matched := false
		for i := range pats {
			if r.next[keyOf[i]] != c || (c == 0 && i < skip) || !startsAt(buf[c:], pats[i].prefix, final) {
				continue
			}
			m := r.machine(i)
			m.start(prev)
			n, done := m.feed(buf[c:], final)
			if !done {
				r.out = append(r.out, buf[emit:c]...)
				r.prev = prev
				if len(buf)-c < r.rd.maxMatch {
					r.hpat, r.hfed, r.ticked = i, n, false
					return r.out, c
				}
				// Past the window and still undecided: redact from here,
				// and go on dropping until the pattern cannot match.
				r.out = append(r.out, pats[i].replacement...)
				r.startDrop(i, buf[c:c+n])
				return r.out, c + n
			}
			if m.matchEnd > 0 {
				r.out = append(r.out, buf[emit:c]...)
				r.out = append(r.out, pats[i].replacement...)
				emit = c + m.matchEnd
				pos = emit
				matched = true
				break
			}
		}
		if !matched {
			pos = c + 1
		}
	}
	r.out = append(r.out, buf[emit:]...)
	r.prev = lastRune(buf, r.prev)
	return r.out, -1
}

// byteRank orders bytes by how common they are in terminal output, lower
// is rarer: a rough table, good enough to pick which byte of a literal start
// to look for.
func byteRank(b byte) int {
	switch {
	case b == ' ' || b == '\n' || b == '\r' || b == '-' || b == '.' || b == '/' || b == ':' || b == '=':
		return 9
	case bytes.IndexByte([]byte("etaoinsrhldcu"), b) >= 0:
		return 8
	case b >= 'a' && b <= 'z':
		return 7
	case b >= '0' && b <= '9':
		return 6
	case bytes.IndexByte([]byte("AEIOST"), b) >= 0:
		return 5
	case b >= 'A' && b <= 'Z', b == '_':
		return 4
	}
	return 5
}

// candidate finds key k at or after from in buf, by the hits of its rarest
// byte; unless final, a proper prefix of the key at the very end counts too
// (the rest may come with the next read). -1: neither. Calls for one key
// come with growing from (r.at[k] remembers where its hits go on).
func (r *redactor) candidate(buf []byte, from, k int, final bool) int {
	key, off := r.rd.keys[k], r.rd.keyOff[k]
	if r.rd.needleOf[k] < 0 {
		if i := bytes.Index(buf[from:], key); i >= 0 {
			return from + i
		}
		return r.partial(buf, from, key, final)
	}
	hits := r.hits[r.rd.needleOf[k]]
	i := r.at[k]
	for ; i < len(hits); i++ {
		c := hits[i] - off
		if c < from {
			continue
		}
		if c+len(key) > len(buf) {
			break // the rest is the partial check's
		}
		if bytes.Equal(buf[c:c+len(key)], key) {
			r.at[k] = i
			return c
		}
	}
	r.at[k] = i
	return r.partial(buf, from, key, final)
}

// partial is where buf ends with a proper prefix of key, at or after from;
// -1 if it does not, or if final.
func (r *redactor) partial(buf []byte, from int, key []byte, final bool) int {
	if final {
		return -1
	}
	for n := min(len(key)-1, len(buf)-from); n > 0; n-- {
		if bytes.HasSuffix(buf, key[:n]) {
			return len(buf) - n
		}
	}
	return -1
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// startsAt reports whether a pattern with literal start prefix may begin at
// b[0]: b starts with prefix, or (unless final) b is a proper prefix of it.
func startsAt(b, prefix []byte, final bool) bool {
	if len(b) >= len(prefix) {
		return bytes.Equal(b[:len(prefix)], prefix)
	}
	return !final && bytes.HasPrefix(prefix, b)
}

func lastRune(b []byte, prev rune) rune {
	if len(b) == 0 {
		return prev
	}
	r, _ := utf8.DecodeLastRune(b)
	return r
}

// machine runs one pattern anchored at a candidate, leftmost-first (the
// Pike VM of package regexp, without captures), and can be fed the input in
// pieces: between feeds it keeps the threads waiting for the next rune.
type machine struct {
	prog     *syntax.Prog
	pending  []uint32 // threads to continue at the next rune, in priority order
	spare    []uint32
	leaves   []uint32
	seenGen  []uint32 // per pc: the closure generation that visited it
	gen      uint32
	prev     rune
	off      int // bytes consumed since start
	matchEnd int // end (offset from start) of the preferred match so far; -1 none
}

func newMachine(prog *syntax.Prog) *machine {
	return &machine{prog: prog, seenGen: make([]uint32, len(prog.Inst))}
}

// start begins an attempt; prev is the rune before the candidate (-1 none).
func (m *machine) start(prev rune) {
	m.pending = append(m.pending[:0], uint32(m.prog.Start))
	m.prev, m.off, m.matchEnd = prev, 0, -1
}

// feed consumes b. It returns done when the outcome is decided (matchEnd
// then holds the match, or -1), and n, the bytes of b consumed: where the
// match ended or the last thread died. Unless final, running out of b
// while a thread could still win leaves done false; a rune split at the
// end of b is then not consumed (feed it again with the rest).
func (m *machine) feed(b []byte, final bool) (n int, done bool) {
	pos := 0
	for {
		if len(m.pending) == 0 {
			return pos, true
		}
		var r rune
		w := 0
		switch {
		case pos < len(b) && (final || utf8.FullRune(b[pos:])):
			r, w = utf8.DecodeRune(b[pos:])
		case pos == len(b) && final:
			r = -1
		default:
			// The next rune is not here yet. The outcome is decided only
			// if the best thread is a match needing no context.
			leaves, needMore := m.closure(0, false)
			if needMore {
				return pos, false
			}
			if len(leaves) > 0 && m.prog.Inst[leaves[0]].Op == syntax.InstMatch {
				m.matchEnd = m.off
				m.pending = m.pending[:0]
				return pos, true
			}
			if len(leaves) == 0 {
				m.pending = m.pending[:0]
				return pos, true
			}
			return pos, false
		}
		leaves, _ := m.closure(syntax.EmptyOpContext(m.prev, r), true)
		next := m.spare[:0]
		for _, pc := range leaves {
			i := &m.prog.Inst[pc]
			if i.Op == syntax.InstMatch {
				m.matchEnd = m.off
				break // lower-priority threads lose (leftmost-first)
			}
			if r >= 0 && matchInst(i, r) {
				next = append(next, i.Out)
			}
		}
		m.spare = m.pending
		m.pending = next
		if r < 0 || len(m.pending) == 0 {
			// The end of the input, or decided before consuming r.
			m.pending = m.pending[:0]
			return pos, true
		}
		pos += w
		m.off += w
		m.prev = r
	}
}

func matchInst(i *syntax.Inst, r rune) bool {
	switch i.Op {
	case syntax.InstRune1:
		return r == i.Rune[0]
	case syntax.InstRune:
		return i.MatchRune(r)
	case syntax.InstRuneAny:
		return true
	case syntax.InstRuneAnyNotNL:
		return r != '\n'
	}
	return false
}

// closure follows the empty transitions of the pending threads, in
// priority order, to the threads that consume a rune or match. Without a
// known context an empty-width assertion makes needMore true.
func (m *machine) closure(ctx syntax.EmptyOp, known bool) (leaves []uint32, needMore bool) {
	m.gen++
	if m.gen == 0 { // wrapped: clear
		clear(m.seenGen)
		m.gen = 1
	}
	m.leaves = m.leaves[:0]
	var add func(pc uint32)
	add = func(pc uint32) {
		if m.seenGen[pc] == m.gen {
			return
		}
		m.seenGen[pc] = m.gen
		i := &m.prog.Inst[pc]
		switch i.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			add(i.Out)
			add(i.Arg)
		case syntax.InstEmptyWidth:
			if !known {
				needMore = true
				return
			}
			if syntax.EmptyOp(i.Arg)&^ctx == 0 {
				add(i.Out)
			}
		case syntax.InstNop, syntax.InstCapture:
			add(i.Out)
		case syntax.InstFail:
		default:
			m.leaves = append(m.leaves, pc)
		}
	}
	for _, pc := range m.pending {
		add(pc)
	}
	return m.leaves, needMore
}
