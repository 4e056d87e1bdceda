package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/term"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/recorder"
)

// sessionSummary is one entry of GET /api/sessions, and of sessions --json.
type sessionSummary struct {
	ID         string    `json:"id"`
	User       string    `json:"user"`
	Principal  string    `json:"principal,omitempty"`
	Host       string    `json:"host"`
	Tier       string    `json:"tier"`
	Kind       string    `json:"kind,omitempty"`
	Command    string    `json:"command,omitempty"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end,omitzero"`
	Live       bool      `json:"live"`
	BreakGlass bool      `json:"break_glass"`
	RequestID  string    `json:"request_id,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Approvers  []string  `json:"approvers,omitempty"`
	Bytes      int64     `json:"bytes"`
	Complete   bool      `json:"complete"`
	Integrity  string    `json:"integrity,omitempty"`
	// UploadedBy and Provenance: which host uploaded it and each check of
	// who, where and which tier, as the playback server found them.
	UploadedBy string            `json:"uploaded_by,omitempty"`
	Provenance []provenanceCheck `json:"provenance,omitempty"`
	Hits       []searchHit       `json:"hits,omitempty"`
	// Flags are the suspicious-activity rules the session raised.
	Flags []string `json:"flags,omitempty"`
}

// provenanceCheck is one provenance check (playback.ProvenanceCheck).
type provenanceCheck struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// searchHit is where a --grep word occurs: seconds into the recording.
type searchHit struct {
	Time float64 `json:"time"`
	Code string  `json:"code"`
	Text string  `json:"text"`
}

func (e *env) cmdSessions(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward sessions [--user U --host H --tier T --since D --until D --grep TEXT --break-glass --live --flagged] [--limit N | --all] [--json] [--playback URL]")
	user := fs.String("user", "", "only sessions of this user")
	host := fs.String("host", "", "only sessions on this host")
	tier := fs.String("tier", "", "only sessions of this tier")
	since := fs.String("since", "", "only sessions started after this: a duration back from now (24h) or a time (2026-01-31T09:00:00Z)")
	until := fs.String("until", "", "only sessions started before this (same forms as --since)")
	grep := fs.String("grep", "", "only sessions whose output or recorded input contains TEXT; shows where")
	breakGlass := fs.Bool("break-glass", false, "only break-glass sessions")
	live := fs.Bool("live", false, "only sessions still running")
	flagged := fs.Bool("flagged", false, "only sessions that raised a suspicious-activity flag (finished ones)")
	limit := fs.Int("limit", 0, "at most N sessions (default 100); says on stderr when more match")
	all := fs.Bool("all", false, "every matching session (pages through the server's list)")
	asJSON := fs.Bool("json", false, "print a JSON list of sessions (id, user, host, tier, start, end, live, break_glass, …)")
	override := fs.String("playback", "", "playback server URL (default: the one the CA knows)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("unexpected argument %q (filters are flags: --user %s)", pos[0], pos[0])
	}
	q := url.Values{}
	for key, v := range map[string]string{"user": *user, "host": *host, "tier": *tier, "q": *grep} {
		if v != "" {
			q.Set(key, v)
		}
	}
	for key, v := range map[string]string{"since": *since, "until": *until} {
		if v == "" {
			continue
		}
		if !validSince(v) {
			return cli.Usagef("--%s %q is neither a duration (24h, 90m) nor an RFC 3339 time (2026-01-31T09:00:00Z)", key, v)
		}
		q.Set(key, v)
	}
	if *breakGlass {
		q.Set("break_glass", "1")
	}
	if *live {
		q.Set("live", "1")
	}
	if *flagged {
		q.Set("flagged", "1")
	}
	if *limit < 0 {
		return cli.Usagef("--limit must be positive")
	}
	if *all && *limit > 0 {
		return cli.Usagef("--all and --limit N exclude each other: pick one")
	}
	pc, err := e.playback(ctx, *override)
	if err != nil {
		return err
	}
	want := defaultListLimit
	if *limit > 0 {
		want = *limit
	}
	if *all {
		want = 0
	}
	list, notes, err := pc.listSessions(ctx, q, want)
	if err != nil {
		return err
	}
	// Notes (the list was cut, the search index is still catching up) go
	// to stderr so that --json stays the list DESIGN.md promises and a
	// pipe gets only rows.
	for _, n := range notes {
		fmt.Fprintln(e.stderr, "sshward: "+n)
	}
	if *asJSON {
		return cli.JSON(e.stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "no sessions match")
		return nil
	}
	e.sessionTable(list)
	return nil
}

// defaultListLimit is how many sessions `sshward sessions` shows without
// --limit or --all; pageLimit the most the server sends in one page.
const (
	defaultListLimit = 100
	pageLimit        = 1000
)

// listSessions reads up to want sessions (0: all) a page at a time, and
// returns the sentences the reader must see with them: the list was cut,
// or a search did not cover recordings the server has not indexed yet.
func (p *playbackClient) listSessions(ctx context.Context, q url.Values, want int) ([]sessionSummary, []string, error) {
	list, cut, note, err := p.listPages(ctx, q, want)
	var notes []string
	for _, n := range []string{cut, note} {
		if n != "" {
			notes = append(notes, n)
		}
	}
	return list, notes, err
}

func (p *playbackClient) listPages(ctx context.Context, q url.Values, want int) (list []sessionSummary, cut, indexNote string, err error) {
	list = []sessionSummary{}
	cursor := ""
	total := -1
	for {
		pq := url.Values{}
		for k, v := range q {
			pq[k] = v
		}
		n := pageLimit
		if want > 0 {
			n = min(want-len(list), pageLimit)
		}
		pq.Set("limit", strconv.Itoa(n))
		if cursor != "" {
			pq.Set("cursor", cursor)
		} else {
			pq.Set("count", "1") // costs the server a pass only when the list is cut
		}
		var res struct {
			Sessions   []sessionSummary `json:"sessions"`
			NextCursor string           `json:"next_cursor"`
			Total      *int             `json:"total"`
			IndexNote  string           `json:"index_note"`
		}
		if err := p.getJSON(ctx, "/api/sessions", pq, &res); err != nil {
			return nil, "", "", err
		}
		if indexNote == "" && res.IndexNote != "" {
			indexNote = "search incomplete: " + res.IndexNote
		}
		list = append(list, res.Sessions...)
		if res.Total != nil {
			total = *res.Total
		}
		if cursor == "" && res.Total == nil && res.NextCursor == "" && len(res.Sessions) == n {
			// A server from before paging: it cannot say what it left out.
			return list, fmt.Sprintf("showing the first %s sessions; more may match (this playback server cannot page: narrow the filters)", thousands(len(list))), indexNote, nil
		}
		cursor = res.NextCursor
		switch {
		case cursor == "":
			return list, "", indexNote, nil
		case want > 0 && len(list) >= want:
			if total >= 0 {
				return list, fmt.Sprintf("showing %s of %s sessions; use --all or --limit N for more", thousands(len(list)), thousands(total)), indexNote, nil
			}
			return list, fmt.Sprintf("showing the first %s sessions; more match: use --all or --limit N", thousands(len(list))), indexNote, nil
		}
	}
}

// thousands writes n with a comma every three digits (2,345).
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func validSince(s string) bool {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return true
	}
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

// Column widths that keep a row of sessionTable within 80 columns with the
// agent's 26-character session ids; the id is never cut (play needs it).
const (
	colUser = 7
	colHost = 10
	colTier = 11 // "break-glass"
	// hitWidth bounds a --grep hit line.
	hitWidth = 80
)

// sessionTable prints one row per session and, with --grep, up to three
// hits under it, each with its offset for `sshward play ID`. Widths are
// computed here rather than by text/tabwriter, whose columns would restart
// at every hit line.
func (e *env) sessionTable(list []sessionSummary) {
	rows := [][]string{{"ID", "START", "USER", "HOST", "TIER", "DUR", "OK"}}
	for _, s := range list {
		rows = append(rows, []string{s.ID, s.Start.Local().Format("01-02 15:04"),
			clip(s.User, colUser), clip(s.Host, colHost), clip(s.Tier, colTier), sessionDuration(s), integrityCell(s.Integrity)})
	}
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(r []string) {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+1))
			}
		}
		fmt.Fprintln(e.stdout, b.String())
	}
	line(rows[0])
	for i, s := range list {
		line(rows[i+1])
		if s.Integrity == integrityFailed {
			fmt.Fprintln(e.stdout, "  ! FAILED integrity check: bytes or host signature do not verify")
		}
		if len(s.Flags) > 0 {
			fmt.Fprintln(e.stdout, "  ! flagged: "+strings.Join(s.Flags, ", ")+" (each is a marker on the session page)")
		}
		for j, h := range s.Hits {
			if j == 3 {
				fmt.Fprintf(e.stdout, "  … %d more\n", len(s.Hits)-3)
				break
			}
			prefix := "  " + offset(h.Time) + "  "
			fmt.Fprintln(e.stdout, prefix+clip(printableText(h.Text), hitWidth-len(prefix)))
		}
	}
}

// integrityCell is the OK column (integrity, two characters so the table
// fits 80 columns): "ok" verified, "NO" failed (with a line under the row
// saying so), "-" not checked yet (live).
func integrityCell(s string) string {
	switch s {
	case integrityFailed:
		return "NO"
	case "verified":
		return "ok"
	}
	return "-"
}

// integrityFailed is the playback server's integrity value of a recording
// whose bytes or host signature no longer verify.
const integrityFailed = "failed"

// sessionDuration is "live", "1h02m", "3m04s" or "12s".
func sessionDuration(s sessionSummary) string {
	if s.Live {
		return "live"
	}
	if s.End.IsZero() || s.End.Before(s.Start) {
		return "-"
	}
	d := s.End.Sub(s.Start).Round(time.Second)
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

// offset writes seconds into a recording as m:ss.t (h:mm:ss past an hour).
func offset(sec float64) string {
	if sec < 0 {
		sec = 0
	}
	d := time.Duration(sec * float64(time.Second))
	if d >= time.Hour {
		return fmt.Sprintf("%d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
	}
	return fmt.Sprintf("%d:%02d.%d", int(d.Minutes()), int(d.Seconds())%60, int(d.Milliseconds()/100)%10)
}

// clip fits s (one line) into n runes.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n && n > 0 {
		return string(r[:n-1]) + "…"
	}
	return s
}

// printableText drops terminal escape sequences and control characters
// (C0, DEL and C1) from a search hit, so a listing never reprograms the
// reader's terminal.
func printableText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			i = skipEscape(s, i)
			continue
		}
		b.WriteByte(s[i])
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(b.String(), ""))
}

// skipEscape returns the index of the last byte of the escape sequence that
// starts at s[i] (ECMA-48 CSI, OSC/DCS strings, or a two-byte sequence).
func skipEscape(s string, i int) int {
	if i+1 >= len(s) {
		return i
	}
	switch s[i+1] {
	case '[':
		j := i + 2
		for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
			j++
		}
		return min(j, len(s)-1)
	case ']', 'P', '_', '^':
		for j := i + 2; j < len(s); j++ {
			if s[j] == 0x07 {
				return j
			}
			if s[j] == 0x1b && j+1 < len(s) && s[j+1] == '\\' {
				return j + 1
			}
		}
		return len(s) - 1
	}
	return i + 1
}

func (e *env) cmdPlay(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward play ID [--speed N] [--idle-limit S] [--commands [--json]] [--playback URL]\n\n" +
		"In a terminal: q quits, space pauses, → and ← seek 5 s. Without one the output\n" +
		"is written at the same pace; sshward export ID writes the recording itself.")
	speed := fs.Float64("speed", 1, "playback speed (2 = twice as fast)")
	idle := fs.Float64("idle-limit", 0, "cut pauses longer than S seconds down to S (0: keep them)")
	override := fs.String("playback", "", "playback server URL (default: the one the CA knows)")
	allowTampered := fs.Bool("allow-tampered", false, "replay a recording that fails its integrity check (evidence of tampering)")
	commands := fs.Bool("commands", false, "print the commands run (time offset, command, exit status where known) instead of replaying")
	asJSON := fs.Bool("json", false, "with --commands: a JSON list (time, command, source, exit_status)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	id, err := sessionArg(pos)
	if err != nil {
		return err
	}
	if *commands {
		return e.printCommands(ctx, id, *override, *asJSON) // commands.go
	}
	if *asJSON {
		return cli.Usagef("--json goes with --commands")
	}
	if !(*speed > 0) || *speed > 1e6 {
		return cli.Usagef("--speed must be a positive number, e.g. 2")
	}
	if !(*idle >= 0) {
		return cli.Usagef("--idle-limit must be zero (no limit) or a number of seconds")
	}
	pc, err := e.playback(ctx, *override)
	if err != nil {
		return err
	}
	var sum sessionSummary
	if err := pc.getJSON(ctx, "/api/sessions/"+url.PathEscape(id), nil, &sum); err != nil {
		return err
	}
	q := url.Values{}
	if sum.Live {
		q.Set("follow", "1")
	}
	if sum.Integrity == integrityFailed && !*allowTampered {
		return fmt.Errorf("recording %s fails its integrity check (its bytes or host signature do not verify): it may have been tampered with; sshward play --allow-tampered %s replays it anyway", id, id)
	}
	resp, err := pc.do(ctx, "/api/sessions/"+url.PathEscape(id)+"/cast", q, "application/x-asciicast")
	if err != nil {
		return err
	}
	body := resp.Body
	defer body.Close()
	// The server checks the bytes again as it serves them.
	if resp.Header.Get("X-Sshward-Integrity") == integrityFailed {
		if !*allowTampered {
			return fmt.Errorf("recording %s fails its integrity check (its bytes or host signature do not verify): it may have been tampered with; sshward play --allow-tampered %s replays it anyway", id, id)
		}
		fmt.Fprintf(e.stderr, "sshward: WARNING: recording %s fails its integrity check; what follows may have been tampered with\n", id)
	}
	p := &termPlayer{out: e.stdout, now: e.now, speed: *speed, idle: *idle}
	var cast io.Reader = body
	if sum.Live {
		// A lost connection is said and repaired, never taken for the end.
		fb := &followBody{ctx: ctx, pc: pc, id: id, body: body, sleep: sleepCtx,
			say: func(s string) {
				if p.tty { // raw mode: a line of its own, carriage return included
					fmt.Fprintf(e.stderr, "\r\nsshward: %s\r\n", s)
					return
				}
				fmt.Fprintf(e.stderr, "sshward: %s\n", s)
			}}
		defer fb.Close()
		cast = fb
	}
	if f, ok := e.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		if in, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(in.Fd())) {
			restore, err := rawTerminal(in)
			if err != nil {
				return err
			}
			defer restore()
			p.keys = readKeys(in)
		}
	}
	return p.play(ctx, cast)
}

func sessionArg(pos []string) (string, error) {
	switch {
	case len(pos) == 0:
		return "", cli.Usagef("a session ID is required (sshward sessions lists them)")
	case len(pos) > 1:
		return "", cli.Usagef("unexpected argument %q", pos[1])
	}
	if err := recorder.CheckSessionID(pos[0]); err != nil {
		return "", cli.Usagef("%q is not a session ID (sshward sessions lists them)", pos[0])
	}
	return pos[0], nil
}

// playbackClient reads from the playback server with the saved CA session:
// its TLS certificate comes from the CA's internal root, which login saved
// (root.pem), and it accepts the CA session token as a Bearer credential.
type playbackClient struct {
	base  string
	token string
	hc    *http.Client
}

// apiTimeout bounds one JSON request; streams are bounded by ctx only, since
// a live session is followed for as long as it runs.
const apiTimeout = 30 * time.Second

// playback finds the playback server: override, or the URL the CA
// registered when the server joined (GET /v1/trust "playback").
func (e *env) playback(ctx context.Context, override string) (*playbackClient, error) {
	h, err := e.home()
	if err != nil {
		return nil, err
	}
	s, err := h.loadSession()
	if err != nil {
		return nil, err
	}
	if !e.now().Before(s.ExpiresAt) {
		return nil, errors.New("your sshward session expired: run sshward login")
	}
	c, _, err := h.client(s.Token)
	if err != nil {
		return nil, err
	}
	// The playback server gets a reader token, never the login session: a
	// token that can only say who we are, not mint certificates.
	rt, err := c.ReaderToken(ctx)
	if err != nil {
		if api.IsCode(err, api.CodeUnauthenticated) {
			return nil, errors.New("your sshward session is missing, expired or revoked: run sshward login")
		}
		return nil, fmt.Errorf("cannot get a reader token from the CA: %w", err)
	}
	base := override
	if base == "" {
		tr, err := c.Trust(ctx)
		if err != nil {
			return nil, fmt.Errorf("cannot ask the CA where the playback server is (%v): pass --playback URL", err)
		}
		if tr.Playback == "" {
			return nil, errors.New("the CA knows no playback server yet: start sshward-playback (it registers itself) or pass --playback URL")
		}
		base = tr.Playback
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, cli.Usagef("playback URL %q must be https://HOST[:PORT]", base)
	}
	root, err := os.ReadFile(h.rootPath())
	if err != nil {
		return nil, fmt.Errorf("the CA root is missing (%s): run sshward login --ca URL --fingerprint FP", h.rootPath())
	}
	tc, err := tlsca.ClientConfigFromPEM(root)
	if err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): run sshward login --ca URL --fingerprint FP", h.rootPath(), err)
	}
	tr := &http.Transport{
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: apiTimeout,
		ForceAttemptHTTP2:     true,
	}
	return &playbackClient{base: strings.TrimRight(base, "/"), token: rt.Token, hc: &http.Client{Transport: tr}}, nil
}

func (p *playbackClient) do(ctx context.Context, path string, q url.Values, accept string) (*http.Response, error) {
	u := p.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("playback: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Accept", accept)
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the playback server at %s (%v): check --playback or ask your admin", p.base, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, &refusal{status: resp.StatusCode, err: playbackError(resp)}
	}
	return resp, nil
}

func (p *playbackClient) getJSON(ctx context.Context, path string, q url.Values, out any) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	resp, err := p.do(ctx, path, q, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("the playback server sent an answer this sshward cannot read (%v): update sshward", err)
	}
	return nil
}

// playbackError turns a refusal into the one sentence a user can act on.
func playbackError(resp *http.Response) error {
	var body struct {
		Message string `json:"message"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return errors.New("the playback server did not accept your session: run sshward login")
	case http.StatusForbidden:
		return errors.New("only auditors may list or replay sessions: ask an admin to add you to the auditors group")
	case http.StatusNotFound:
		return errors.New("no such session on the playback server (sshward sessions lists them)")
	}
	if body.Message != "" {
		return fmt.Errorf("the playback server refused: %s", body.Message)
	}
	return fmt.Errorf("the playback server answered %s", resp.Status)
}
