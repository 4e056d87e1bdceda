package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sync"
	"unicode"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// Suspicious-activity flags (issue 13 §2, api.FlagRule). The CA sends the
// tier's rules on each revocation stream it opens (hello); until the
// agent has heard them it applies api.DefaultFlagRules. A hit puts a
// marker in the recording ("flag RULE: MESSAGE: TEXT", at the moment it
// happened), writes an AuditSessionFlagged event and an alert log line; a
// deny rule on exec refuses the command before anything runs. Typed input
// is only ever flagged (see api.FlagRule): a shell runs what a pattern
// cannot see.

// AuditSessionFlagged is the agent audit action of a flag hit.
const AuditSessionFlagged = "session.flagged"

// FlagMarkerPrefix starts the label of every flag marker in a recording.
const FlagMarkerPrefix = "flag "

// Bounds of the evaluation.
const (
	maxFlagLine     = 4 << 10 // a typed or printed line is matched up to this many bytes
	maxFlagsPerSess = 100     // flags a session raises at most (then one marker says so)
)

// flagRules is a compiled rule set.
type flagRules struct {
	rules []api.FlagRule
	re    []*regexp.Regexp // per rule; nil without Match
	lit   [][]byte         // per rule: a literal every match contains (fast reject), or nil
	// outRules: some rule looks at output; outLiterals: every such rule
	// has a literal, outLits (outputLinesLocked's fast path).
	outRules, outLiterals bool
	outLits               [][]byte
}

func compileFlagRules(rs []api.FlagRule) *flagRules {
	fr := &flagRules{}
	for _, r := range rs {
		if r.Check() != nil {
			continue // the CA checks them; a broken one is skipped, not fatal
		}
		var re *regexp.Regexp
		var lit []byte
		if r.Match != "" {
			re = regexp.MustCompile(r.Match) // Check compiled it
			if p, complete := re.LiteralPrefix(); p != "" && !complete {
				lit = []byte(p)
			}
		}
		fr.rules = append(fr.rules, r)
		fr.re = append(fr.re, re)
		fr.lit = append(fr.lit, lit)
	}
	fr.outLiterals = true
	for i, r := range fr.rules {
		if r.Looks(api.FlagOnOutput) {
			fr.outRules = true
			if fr.lit[i] == nil {
				fr.outLiterals = false
			}
			fr.outLits = append(fr.outLits, anchor(fr.lit[i]))
		}
	}
	return fr
}

// anchor is the part of a literal the output fast path searches for: any
// part of it is a necessary condition, and one that starts with a letter or
// digit is rarer in output than punctuation ("BEGIN " rather than
// "-----BEGIN ", whose dashes every ls -l has).
func anchor(lit []byte) []byte {
	if lit == nil {
		return nil
	}
	i := bytes.IndexFunc(lit, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) })
	if i <= 0 || len(lit)-i < 3 {
		return lit
	}
	return lit[i:]
}

// setFlagRules installs the rules the CA sent.
func (s *Server) setFlagRules(rs []api.FlagRule) {
	fr := compileFlagRules(rs)
	s.over.mu.Lock()
	s.over.rules = fr
	s.over.mu.Unlock()
}

// flagRulesNow returns the rules in force.
func (s *Server) flagRulesNow() *flagRules {
	s.over.mu.Lock()
	defer s.over.mu.Unlock()
	if s.over.rules == nil {
		s.over.rules = compileFlagRules(api.DefaultFlagRules())
	}
	return s.over.rules
}

// hit is one rule that matched.
type hit struct {
	rule api.FlagRule
	text string
}

// match returns the rules looking at on that match line.
func (fr *flagRules) match(on string, line []byte) []hit {
	var out []hit
	for i, r := range fr.rules {
		if fr.re[i] == nil || !r.Looks(on) {
			continue
		}
		if fr.lit[i] != nil && !bytes.Contains(line, fr.lit[i]) {
			continue
		}
		if fr.re[i].Match(line) {
			out = append(out, hit{rule: r, text: string(line)})
		}
	}
	return out
}

// sessionFlags evaluates the rules over one session as it runs.
type sessionFlags struct {
	s     *session
	rules *flagRules
	rec   *sessionRecording

	mu        sync.Mutex // guards the fields below
	raised    int
	edit      recorder.LineEditor
	outLine   []byte // the printed line so far
	bytesOut  int64
	overDone  map[string]bool // bytes_out rules already raised
	ruleNames []string        // rules raised, in order (Metadata.Flags)
	scratch   []byte          // literalIn's join buffer
}

// names returns the rules the session raised (nil f: none).
func (f *sessionFlags) names() []string {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ruleNames)
}

// checkExec evaluates the exec rules over the command line before it runs;
// it returns the refusal message of the first deny rule that matched.
func (s *session) checkExec(p plan) (denied string, hits []hit) {
	if p.kind != recorder.KindExec || p.command == "" {
		return "", nil
	}
	hits = s.c.srv.flagRulesNow().match(api.FlagOnExec, []byte(p.command))
	for _, h := range hits {
		if h.rule.Action == api.FlagActionDeny {
			msg := h.rule.Message
			if msg == "" {
				msg = "the command matches rule " + h.rule.Name
			}
			return "this command is refused by the tier's policy (" + h.rule.Name + "): " + msg + ".", hits
		}
	}
	return "", hits
}

// raise records, audits and alerts one hit.
func (f *sessionFlags) raise(on string, h hit) {
	f.mu.Lock()
	f.raised++
	n := f.raised
	if !slices.Contains(f.ruleNames, h.rule.Name) && len(f.ruleNames) < maxFlagsPerSess {
		f.ruleNames = append(f.ruleNames, h.rule.Name)
	}
	f.mu.Unlock()
	if n > maxFlagsPerSess {
		if n == maxFlagsPerSess+1 {
			f.rec.marker(FlagMarkerPrefix + "limit: more flags in this session are not marked")
		}
		return
	}
	f.s.raiseFlag(on, h, f.rec)
}

// raiseFlag marks, audits and alerts a hit (rec nil: nothing recorded,
// e.g. a refused exec).
func (s *session) raiseFlag(on string, h hit, rec *sessionRecording) {
	text := cleanNotice(s.c.srv.redact.String(h.text))
	label := FlagMarkerPrefix + h.rule.Name + ": " + h.rule.Message + ": " + text
	if rec != nil {
		rec.marker(label)
	}
	s.log.Warn("agent: ALERT session flagged", "alert", true, "rule", h.rule.Name, "on", on, "action", h.rule.Action, "text", text)
	s.c.srv.audit(context.WithoutCancel(s.ctx), s.auditEvent(AuditSessionFlagged, h.rule.Name+": "+h.rule.Message, on+": "+text))
	action := api.FlagActionFlag
	if rec == nil && on == api.FlagOnExec && h.rule.Action == api.FlagActionDeny {
		action = api.FlagActionDeny // the command was refused
	}
	g := s.c.g
	s.c.srv.queueFlagReport(api.FlagReport{SessionID: s.id, Rule: h.rule.Name, Action: action, On: on, Message: h.rule.Message,
		Text: text, Tier: g.tier, Serial: g.cert.Serial, KeyID: g.cert.KeyId, Identity: g.identity, Principal: g.login,
		At: s.c.srv.cfg.Now()})
}

// input takes what the user typed at the terminal (not hidden input) and
// rebuilds each line as a line editor (bash's readline, in emacs mode)
// would: printable text, backspace/DEL, ^U (kill line), ^W (kill word),
// ^C (drop the line), escape sequences (cursor keys) skipped; Enter ends
// the line, which is then matched.
func (f *sessionFlags) input(p []byte) {
	f.mu.Lock()
	done := f.edit.Feed(p)
	f.mu.Unlock()
	for _, l := range done {
		for _, h := range f.rules.match(api.FlagOnInput, l) {
			f.raise(api.FlagOnInput, h)
		}
	}
}

// output takes what is sent to the client: it counts the bytes and
// matches each printed line.
func (f *sessionFlags) output(p []byte) {
	var over []api.FlagRule
	var hits []hit
	f.mu.Lock()
	f.bytesOut += int64(len(p))
	for _, r := range f.rules.rules {
		if r.Looks(api.FlagOnBytesOut) && f.bytesOut > r.OverBytes && !f.overDone[r.Name] {
			if f.overDone == nil {
				f.overDone = map[string]bool{}
			}
			f.overDone[r.Name] = true
			over = append(over, r)
		}
	}
	if f.rules.outRules {
		hits = f.outputLinesLocked(p)
	}
	total := f.bytesOut
	f.mu.Unlock()
	for _, r := range over {
		f.raise(api.FlagOnBytesOut, hit{rule: r, text: formatBytes(total) + " sent to the client"})
	}
	for _, h := range hits {
		f.raise(api.FlagOnOutput, h)
	}
}

// outputLinesLocked matches the printed lines p completes (with the line
// carried from earlier output); lines are cut at maxFlagLine. Output is
// the hot path of every session: when every output rule has a literal
// that neither p nor its join with the carried line contains, no line can
// match and only the carry is kept; otherwise lines are matched in place.
func (f *sessionFlags) outputLinesLocked(p []byte) []hit {
	if f.rules.outLiterals && !f.literalIn(p) {
		// Only the tail can be carried: LastIndexByte is a plain loop, so
		// it is not run over the whole chunk.
		if len(p) > maxFlagLine {
			f.outLine, p = f.outLine[:0], p[len(p)-maxFlagLine:]
		}
		if i := bytes.LastIndexByte(p, '\n'); i >= 0 {
			f.outLine, p = f.outLine[:0], p[i+1:]
		}
		if len(f.outLine)+len(p) > maxFlagLine {
			f.outLine = f.outLine[:0] // nothing in it can match
		}
		f.outLine = append(f.outLine, p...)
		return nil
	}
	var hits []hit
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxFlagLine - len(f.outLine)
			if len(p) < room {
				f.outLine = append(f.outLine, p...)
				break
			}
			i = room // a long line is matched in pieces
		}
		line := p[:i]
		if len(f.outLine) > 0 {
			f.outLine = append(f.outLine, line...)
			line = f.outLine
		}
		hits = append(hits, f.rules.match(api.FlagOnOutput, line)...)
		f.outLine = f.outLine[:0]
		if i < len(p) && p[i] == '\n' {
			i++
		}
		p = p[i:]
	}
	return hits
}

// literalIn reports whether an output rule's literal is in p, in the
// carried line, or across their join.
func (f *sessionFlags) literalIn(p []byte) bool {
	for _, lit := range f.rules.outLits {
		if bytes.Contains(p, lit) || bytes.Contains(f.outLine, lit) {
			return true
		}
		if len(f.outLine) > 0 && len(lit) > 1 {
			k := len(lit) - 1
			f.scratch = append(f.scratch[:0], f.outLine[max(0, len(f.outLine)-k):]...)
			f.scratch = append(f.scratch, p[:min(len(p), k)]...)
			if bytes.Contains(f.scratch, lit) {
				return true
			}
		}
	}
	return false
}

func formatBytes(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// flagWriter feeds a session's output to its flags (an io.TeeReader's
// writer); it never fails.
type flagWriter struct{ f *sessionFlags }

func (w flagWriter) Write(p []byte) (int, error) {
	w.f.output(p)
	return len(p), nil
}

var _ io.Writer = flagWriter{}
