package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// Timeouts of a session's end.
const (
	// hangupGrace is how long processes get between SIGHUP and SIGKILL when
	// the agent ends a session.
	hangupGrace = time.Second
	// drainTimeout bounds reading what is left of the output once the
	// session's processes are gone; a daemon that escaped the process
	// group may hold the other end open forever.
	drainTimeout = 2 * time.Second
)

// session is one "session" channel (RFC 4254 section 6): requests that
// set it up (pty-req, env, auth-agent-req), one that starts it (shell,
// exec, subsystem), and requests while it runs (window-change, signal,
// break).
type session struct {
	c    *serverConn
	ch   ssh.Channel
	reqs <-chan *ssh.Request
	id   string
	log  *slog.Logger

	ctx    context.Context // ends with the connection's cause or a recording failure
	cancel context.CancelCauseFunc

	// Set up by requests before the start; the request loop owns them.
	pty      *ptyRequest
	env      []string // allowlisted client variables, NAME=value
	agentFwd bool

	mu      sync.Mutex // guards the fields below
	started bool
	st      *stdio
	proc    *process
	rec     *sessionRecording
	inRec   *inputRecorder // terminal input recorder, when input is recorded
	flags   *sessionFlags  // suspicious-activity rules (flags.go)
	cols    int
	rows    int
	// endedBy is the cause the agent ended the running session with (set
	// by tellEnd); nil when it ended by itself or the client left.
	endedBy error
	// shown is what the session runs, as recorded (set by openRecording).
	shown string
	// unrecorded is the reason the session starts unrecorded, shown to the
	// user once it started (set by openRecording on an open tier).
	unrecorded string

	finished chan struct{}  // closed when the started session has finished
	pumps    sync.WaitGroup // output pumps; finish waits for them
	input    sync.WaitGroup // the input pump; it ends when the channel closes
}

func newSession(c *serverConn, n int32, ch ssh.Channel, reqs <-chan *ssh.Request) *session {
	id := c.id + "-" + strconv.Itoa(int(n))
	ctx, cancel := context.WithCancelCause(c.ctx)
	return &session{c: c, ch: ch, reqs: reqs, id: id, ctx: ctx, cancel: cancel,
		log: c.logger(id), finished: make(chan struct{})}
}

// run serves the channel's requests until the client or the session ends.
func (s *session) run() {
	defer s.cancel(errClientGone)
	for req := range s.reqs {
		s.handle(req)
	}
	// The channel is closed: by us once the session finished, or by the
	// client (or its connection) first, which ends the session.
	s.cancel(errClientGone)
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if started {
		<-s.finished
	}
	s.ch.Close()
	s.input.Wait()
}

func reply(req *ssh.Request, ok bool) {
	if req.WantReply {
		_ = req.Reply(ok, nil)
	}
}

func (s *session) handle(req *ssh.Request) {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	switch req.Type {
	case "pty-req":
		if started || s.pty != nil {
			reply(req, false)
			return
		}
		if !s.c.g.permitPTY {
			s.c.refuseRequest("pty-req", "certificate does not permit a terminal (permit-pty)", s.id)
			reply(req, false)
			return
		}
		p, err := parsePtyRequest(req.Payload)
		if err != nil {
			s.log.Debug("agent: bad pty-req", "err", err)
			reply(req, false)
			return
		}
		s.pty = &p
		s.mu.Lock()
		s.cols, s.rows = p.Cols, p.Rows
		s.mu.Unlock()
		reply(req, true)
	case "env":
		e, err := parseEnv(req.Payload)
		if err != nil || started || !envAllowed(e.Name) || len(s.env) >= 64 {
			s.log.Debug("agent: env request ignored", "name", e.Name, "err", err)
			reply(req, false)
			return
		}
		s.env = append(s.env, e.Name+"="+e.Value)
		reply(req, true)
	case "auth-agent-req@openssh.com":
		if !s.c.g.permitAgent {
			s.c.refuseRequest(req.Type, "certificate does not permit agent forwarding (permit-agent-forwarding)", s.id)
			reply(req, false)
			return
		}
		s.agentFwd = !started
		reply(req, !started)
	case "x11-req":
		s.c.refuseRequest(req.Type, "X11 forwarding is never permitted", s.id)
		reply(req, false)
	case "shell", "exec", "subsystem":
		if started {
			reply(req, false)
			return
		}
		s.start(req)
	case "window-change":
		s.windowChange(req.Payload)
		reply(req, s.pty != nil)
	case "signal":
		sig, err := parseSignal(req.Payload)
		s.mu.Lock()
		proc := s.proc
		s.mu.Unlock()
		if err != nil || proc == nil {
			reply(req, false)
			return
		}
		reply(req, proc.signal(sig) == nil)
	case "break":
		_, err := parseBreak(req.Payload)
		s.mu.Lock()
		st := s.st
		s.mu.Unlock()
		reply(req, err == nil && st != nil && st.master != nil && st.sendBreak() == nil)
	default:
		// keepalive@openssh.com and unknown requests: failure is the
		// answer clients expect (RFC 4254 section 5.4).
		reply(req, false)
	}
}

func (s *session) windowChange(payload []byte) {
	w, err := parseWindowChange(payload)
	if err != nil || s.pty == nil {
		return
	}
	s.mu.Lock()
	s.cols, s.rows = w.Cols, w.Rows
	st, rec := s.st, s.rec
	s.mu.Unlock()
	if st != nil && st.master != nil {
		_ = st.setSize(w.Cols, w.Rows, w.WidthPx, w.HeightPx)
	}
	if rec != nil {
		rec.resize(w.Cols, w.Rows)
	}
}

// plan is what a start request runs.
type plan struct {
	kind      string // recorder.KindShell, KindExec or KindSubsystem
	requested string // exec command or subsystem name, as the client asked
	command   string // what runs: requested, or the force-command
	shown     string // command as recorded, audited and logged: secrets redacted
	forced    bool
}

func (s *session) plan(req *ssh.Request) (plan, error) {
	var p plan
	var err error
	switch req.Type {
	case "shell":
		p.kind = recorder.KindShell
	case "exec":
		p.kind = recorder.KindExec
		p.requested, err = parseExec(req.Payload)
	case "subsystem":
		p.kind = recorder.KindSubsystem
		p.requested, err = parseSubsystem(req.Payload)
	}
	if err != nil {
		return p, err
	}
	p.command = p.requested
	if g := s.c.g; g.hasForce {
		// force-command replaces shells, commands and subsystems alike,
		// as in sshd; the original is in SSH_ORIGINAL_COMMAND.
		p.forced, p.command = true, g.forceCommand
		if p.kind == recorder.KindSubsystem || p.kind == recorder.KindShell {
			p.kind = recorder.KindExec
		}
	}
	// A command line is typed input too: `ssh host 'curl -H "Authorization:
	// Bearer …"'` must not put the token in the recording, the audit log
	// or the agent's log.
	p.shown = s.c.srv.redact.String(p.command)
	if p.kind == recorder.KindSubsystem && p.command != "sftp" {
		return p, fmt.Errorf("agent: unknown subsystem %q", p.shown)
	}
	return p, nil
}

// start runs the session's process (or the in-process SFTP server) and
// answers the start request.
func (s *session) start(req *ssh.Request) {
	g := s.c.g
	if s.ctx.Err() != nil {
		cause := context.Cause(s.ctx)
		status, _ := endStatus(cause)
		s.refuseStart(req, strings.TrimPrefix(endMessage(cause), "sshward: "), status)
		return
	}
	p, err := s.plan(req)
	if err != nil {
		s.log.Info("agent: session start refused", "err", err)
		reply(req, false)
		return
	}
	denied, hits := s.checkExec(p) // flags.go
	if denied != "" {
		for _, h := range hits {
			s.raiseFlag(api.FlagOnExec, h, nil)
		}
		s.c.srv.audit(s.ctx, s.auditEvent(AuditSessionRefused, denied, p.shown))
		s.refuseStart(req, denied, ExitRefused)
		return
	}
	rec, ok := s.openRecording(p)
	if !ok {
		s.refuseStart(req, "this host cannot record sessions right now, and its tier requires recording; try again later or ask an administrator.", ExitRecordingFailed)
		return
	}
	fl := &sessionFlags{s: s, rules: s.c.srv.flagRulesNow(), rec: rec}
	for _, h := range hits {
		fl.raise(api.FlagOnExec, h)
	}
	subsystem := p.kind == recorder.KindSubsystem
	if subsystem && s.sftpInProcess() {
		s.serveSFTP(req, p, rec)
		return
	}
	var st *stdio
	if s.pty != nil && !subsystem {
		st, err = openPTY(s.pty)
	} else {
		st, err = openPipes()
	}
	if err != nil {
		s.failStart(req, rec, err)
		return
	}
	cmd, cleanup, err := s.command(p, st)
	if err != nil {
		st.closeAll()
		s.failStart(req, rec, err)
		return
	}
	s.mu.Lock()
	s.started, s.st, s.rec, s.flags = true, st, rec, fl
	s.mu.Unlock()

	// Output pumps first: ~/.ssh/rc writes to the session too. SFTP is
	// binary: recorded as markers of its requests, not as output.
	if st.master != nil {
		s.pumps.Go(func() { s.pumpOutput(io.TeeReader(st.master, flagWriter{fl}), s.ch, rec, true) })
	} else {
		s.pumps.Go(func() { s.pumpOutput(io.TeeReader(st.stdout, flagWriter{fl}), s.ch, rec, !subsystem) })
		s.pumps.Go(func() { s.pumpOutput(io.TeeReader(st.stderr, flagWriter{fl}), s.ch.Stderr(), rec, !subsystem) })
	}
	if g.permitUserRC && !subsystem {
		s.runUserRC(cmd, st)
	}
	proc, err := startProcess(cmd, st)
	st.closeChildEnds()
	if err != nil {
		// The pumps run: finish collects them and reports exit status 1.
		s.log.Error("agent: cannot start the session", "err", err)
		reply(req, true)
		fmt.Fprintf(s.ch.Stderr(), "sshward: cannot start the session on this host.\r\n")
		go s.finish(nil, rec, cleanup)
		return
	}
	s.mu.Lock()
	s.proc = proc
	s.mu.Unlock()
	reply(req, true)
	s.showUnrecorded()
	s.auditStart(p)

	in := st.stdin
	if st.master != nil {
		in = st.master
	}
	var tap func([]byte) bool
	switch {
	case subsystem:
		sn := &sftpSniffer{emit: rec.marker}
		tap = func(b []byte) bool { sn.feed(b); return true }
	case g.settings.RecordInput && st.master != nil:
		// Typed at a terminal: what it does not echo is left out.
		ir := &inputRecorder{rec: rec, hidden: st.echoOff}
		s.mu.Lock()
		s.inRec = ir
		s.mu.Unlock()
		tap = ir.record
	case g.settings.RecordInput:
		tap = rec.input
	}
	if g.settings.RecordInput && st.master != nil {
		// Typed commands are flagged where input is recorded (flags.go).
		recordInput := tap
		tap = func(b []byte) bool {
			ok := recordInput(b)
			if !st.echoOff() {
				fl.input(b)
			}
			return ok
		}
	}
	s.input.Go(func() { s.pumpInput(in, st.master == nil, tap) })
	go s.finish(proc, rec, cleanup)
}

// openRecording creates the session's recording. When the spool fails,
// the tier decides: closed refuses the session (ok false, the user told
// why), open goes on unrecorded after an alert.
func (s *session) openRecording(p plan) (*sessionRecording, bool) {
	g := s.c.g
	sr := &sessionRecording{mode: g.settings.OnRecordingFailure}
	sr.onFail = s.recordingFailed
	sr.onDrop = s.recordingDropped
	s.mu.Lock()
	cols, rows := s.cols, s.rows
	s.shown = p.shown
	s.mu.Unlock()
	if cols == 0 {
		cols, rows = defaultCols, defaultRows
	}
	term := ""
	if s.pty != nil {
		term = s.pty.Term
	}
	title := g.login + "@" + s.c.srv.cfg.HostName
	if p.shown != "" {
		title += ": " + p.shown
	}
	meta := recorder.Metadata{
		SessionID: s.id, Identity: g.identity, Principal: g.login, KeyID: g.cert.KeyId,
		Serial: g.cert.Serial, Tier: g.tier, Host: s.c.srv.cfg.HostName, ClientAddr: g.clientAddr,
		RequestID: g.requestID, Reason: g.reason, Approvers: g.approvers, Kind: p.kind, Command: p.shown,
		UserCert:    strings.TrimSpace(string(ssh.MarshalAuthorizedKey(g.cert))),
		RecordInput: g.settings.RecordInput && p.kind != recorder.KindSubsystem,
		Start:       s.c.srv.cfg.Now(),
		// The tier's bulk_output cap on the side blob (recorder blob.go).
		BulkKeepBytes: g.settings.BulkKeepBytes,
	}
	if s.pty == nil {
		// No terminal turns LF into CR LF for the client: the recording
		// does, so that players draw lines, not a staircase.
		meta.OutputNewlines = recorder.NewlinesCRLF
	}
	hdr := recorder.Header{Version: recorder.Version, Width: cols, Height: rows,
		Timestamp: meta.Start.Unix(), Env: map[string]string{"TERM": term, "SHELL": g.user.Shell}, Title: title}
	rec, err := s.c.srv.spool.Create(s.ctx, meta, hdr)
	if err == nil {
		sr.rec = rec
		return sr, true
	}
	s.alertRecording(err)
	if sr.mode == FailClosed {
		s.c.srv.audit(s.ctx, s.auditEvent(AuditSessionRefused, "recording unavailable", p.shown))
		return nil, false
	}
	reason := s.reportUnrecorded(api.UnrecordedAtStart, err, p.shown)
	s.mu.Lock()
	s.unrecorded = reason
	s.mu.Unlock()
	return sr, true
}

// showUnrecorded tells the user, once the session started, that it runs
// unrecorded (openRecording found the spool failing on an open tier).
func (s *session) showUnrecorded() {
	s.mu.Lock()
	reason := s.unrecorded
	s.mu.Unlock()
	if reason != "" {
		_, _ = io.WriteString(s.ch.Stderr(), unrecordedBanner(reason))
	}
}

// recordingFailed handles a failure during the session (or while its
// recording is finished: closing): a closed tier ends the session, an open
// one reports it and tells the user it goes on unrecorded.
func (s *session) recordingFailed(err error, closing bool) {
	s.alertRecording(err)
	if s.c.g.settings.OnRecordingFailure == FailClosed {
		s.cancel(ErrRecordingFailed)
		return
	}
	s.mu.Lock()
	shown := s.shown
	s.mu.Unlock()
	if closing {
		s.reportUnrecorded(api.UnrecordedAtEnd, err, shown)
		return
	}
	reason := s.reportUnrecorded(api.UnrecordedDuring, err, shown)
	_, _ = io.WriteString(s.ch.Stderr(), "\r\n"+unrecordedBanner(reason))
}

func (s *session) alertRecording(err error) {
	mode := s.c.g.settings.OnRecordingFailure
	msg := "agent: ALERT recording failed; tier fails closed: ending the session"
	if mode == FailOpen {
		msg = "agent: ALERT recording failed; tier fails open: the session continues unrecorded"
	}
	s.log.Error(msg, "alert", true, "err", err, "on_recording_failure", string(mode))
	s.c.srv.audit(context.WithoutCancel(s.ctx), s.auditEvent(AuditRecordingFailed, err.Error(), string(mode)))
}

func (s *session) failStart(req *ssh.Request, rec *sessionRecording, err error) {
	s.log.Error("agent: cannot set up the session", "err", err)
	_, _ = rec.close(context.WithoutCancel(s.ctx), recorder.EndInfo{Reason: "session setup failed"}, "")
	s.refuseStart(req, "cannot start the session on this host.", ExitRefused)
}

// refuseStart ends a session that will not run, telling the user why: the
// request is accepted so that the client shows the message (OpenSSH drops
// a refused channel's stderr), then the exit status (ExitRefused, or the
// cause's: see endStatus).
func (s *session) refuseStart(req *ssh.Request, msg string, status uint32) {
	reply(req, true)
	fmt.Fprintf(s.ch.Stderr(), "sshward: %s\r\n", msg)
	_, _ = s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	_ = s.ch.CloseWrite()
	_ = s.ch.Close()
}

func (s *session) auditEvent(action, reason, detail string) AuditEvent {
	g := s.c.g
	return AuditEvent{Action: action, SessionID: s.id, Serial: g.cert.Serial, KeyID: g.cert.KeyId,
		Principal: g.login, Tier: g.tier, ClientAddr: g.clientAddr, Reason: reason, Detail: detail}
}

func (s *session) auditStart(p plan) {
	detail := p.kind
	if p.shown != "" {
		detail += ": " + p.shown
	}
	s.log.Info("agent: session started", "kind", p.kind, "command", p.shown, "pty", s.pty != nil)
	s.c.srv.audit(s.ctx, s.auditEvent(AuditSessionStart, "", detail))
}

// command builds the process for plan p: the user's login shell, with -c
// for commands, or the SFTP server; in the user's home, with the
// session's environment.
func (s *session) command(p plan, st *stdio) (command, func(), error) {
	g := s.c.g
	u := g.user
	c := command{path: u.Shell, user: u, dir: u.Home}
	base := filepath.Base(u.Shell)
	switch p.kind {
	case recorder.KindShell:
		c.args = []string{"-" + base} // a login shell, as sshd starts it
	case recorder.KindExec:
		c.args = []string{base, "-c", p.command}
	case recorder.KindSubsystem:
		c.path = s.c.srv.cfg.SFTPServerPath
		c.args = []string{filepath.Base(c.path)}
	}
	if fi, err := os.Stat(u.Home); err != nil || !fi.IsDir() {
		c.dir = "/"
	}
	c.env = s.environment(p, st)
	cleanup := func() {}
	if s.agentFwd {
		sock, stop, err := s.c.listenAgent(s.ctx, u)
		if err != nil {
			return command{}, nil, err
		}
		c.env = append(c.env, "SSH_AUTH_SOCK="+sock)
		cleanup = stop
	}
	return c, cleanup, nil
}

// environment is the process environment: account basics, SSH_* like
// sshd, the allowlisted client variables, and the terminal's.
func (s *session) environment(p plan, st *stdio) []string {
	g := s.c.g
	u := g.user
	path := "/usr/local/bin:/usr/bin:/bin:/usr/games"
	if u.UID == 0 {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	env := []string{
		"USER=" + u.Name, "LOGNAME=" + u.Name, "HOME=" + u.Home, "SHELL=" + u.Shell,
		"PATH=" + path, "MAIL=/var/mail/" + u.Name,
	}
	if rh, rp, err := net.SplitHostPort(g.clientAddr); err == nil {
		lh, lp, _ := net.SplitHostPort(s.c.sconn.LocalAddr().String())
		env = append(env, "SSH_CLIENT="+rh+" "+rp+" "+lp, "SSH_CONNECTION="+rh+" "+rp+" "+lh+" "+lp)
	}
	env = append(env, s.env...)
	if s.pty != nil {
		env = append(env, "TERM="+s.pty.Term, "SSH_TTY="+st.ttyName)
	}
	if p.forced {
		env = append(env, "SSH_ORIGINAL_COMMAND="+p.requested)
	}
	return env
}

// runUserRC runs ~/.ssh/rc before the session's command when the
// certificate permits it (permit-user-rc), as sshd: /bin/sh reads it, its
// output goes to the session, its stdin is empty.
func (s *session) runUserRC(c command, st *stdio) {
	rc := filepath.Join(c.user.Home, ".ssh", "rc")
	if fi, err := os.Stat(rc); err != nil || !fi.Mode().IsRegular() {
		return
	}
	_, out, errOut := st.childFiles()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return
	}
	defer devnull.Close()
	rcIO := &stdio{childIn: devnull, childOut: out, childErr: errOut}
	proc, err := startProcess(command{path: "/bin/sh", args: []string{"sh", rc}, env: c.env, dir: c.dir, user: c.user}, rcIO)
	if err != nil {
		s.log.Warn("agent: cannot run ~/.ssh/rc", "err", err)
		return
	}
	exited := make(chan struct{})
	go func() {
		proc.waitExited()
		close(exited)
	}()
	select {
	case <-exited:
	case <-s.ctx.Done():
		proc.terminate(context.Background(), exited, hangupGrace)
		<-exited
	}
	proc.signalGroup(syscall.SIGKILL)
	proc.reap()
}

// pumpChunk is what the output pumps read at once, and the most they send
// at once: OpenSSH's channel packet size.
const pumpChunk = 32 << 10

// pumpOutput copies the process's output to the client, recording it
// when record is set: then the recorder runs beside the pump and the
// sender, and the tier decides what a recorder that cannot keep up does to
// the session (recqueue.go). EIO from a terminal means its last holder
// closed it.
//
// Sending runs in a goroutine of its own (the channel encrypts there), so
// that reading and sending overlap. What is read while a send is under
// way goes out in one write: a terminal gives a few KiB per read, and a
// packet per read costs more than the rest of the session.
func (s *session) pumpOutput(r io.Reader, w io.Writer, rec *sessionRecording, record bool) {
	if record && !rec.unrecorded() {
		s.pumpRecorded(r, w, rec)
		return
	}
	out := newOutputQueue()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		s.sendOutput(out, w)
	}()
	defer func() {
		out.close()
		<-sent
	}()
	buf := make([]byte, pumpChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			out.put(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// outputQueue hands recorded output from an output pump to its sender,
// holding at most pumpChunk bytes. Two buffers take turns, one filling
// while the other is sent; they grow with what a session prints at once,
// so a quiet session keeps small ones.
type outputQueue struct {
	ready chan struct{} // a token when pending has data or the queue closed
	space chan struct{} // a token when the sender took pending

	mu      sync.Mutex // guards the fields below
	pending []byte
	closed  bool
}

func newOutputQueue() *outputQueue {
	return &outputQueue{ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// put appends p (at most pumpChunk bytes), waiting while it does not fit.
func (q *outputQueue) put(p []byte) {
	for {
		q.mu.Lock()
		if len(q.pending)+len(p) <= pumpChunk {
			q.pending = append(q.pending, p...)
			q.mu.Unlock()
			wake(q.ready)
			return
		}
		q.mu.Unlock()
		<-q.space
	}
}

// take returns what is pending, leaving buf (emptied) in its place; false
// once the queue is closed and empty.
func (q *outputQueue) take(buf []byte) ([]byte, bool) {
	for {
		q.mu.Lock()
		if len(q.pending) > 0 {
			out := q.pending
			q.pending = buf[:0]
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

func (q *outputQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	wake(q.ready)
}

// pumpInput copies what the client sends to the process, through tap
// (recording input, or the SFTP sniffer) when there is one: tap false
// withholds the data. EOF from the client closes stdin of a command; a
// terminal stays open (the user may still type ^D).
func (s *session) pumpInput(w *os.File, closeOnEOF bool, tap func([]byte) bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.ch.Read(buf)
		if n > 0 {
			if tap != nil && !tap(buf[:n]) {
				return
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if closeOnEOF {
				w.Close()
			}
			return
		}
	}
}

// finish waits for the session's end, by its own exit or a cause, and
// reports it: recording closed, exit-status or exit-signal, channel
// closed. proc is nil when the process never started.
func (s *session) finish(proc *process, rec *sessionRecording, cleanup func()) {
	defer close(s.finished)
	defer cleanup()
	s.mu.Lock()
	st := s.st
	s.mu.Unlock()

	exited := make(chan struct{})
	if proc != nil {
		go func() {
			proc.waitExited()
			close(exited)
		}()
		s.waitSession(proc, exited, st, rec)
		// Whatever the main process left behind in its group goes too,
		// so that the terminal or pipes reach EOF.
		proc.signalGroup(syscall.SIGKILL)
	}
	s.drain(st)
	failed := 1 // the process never started
	ex := exitInfo{status: &failed}
	if proc != nil {
		ex = proc.reap()
	}
	st.closeAll()
	s.report(ex, rec)
}

// waitSession waits for the process to exit or the session to be ended.
// Meanwhile it checks the recording every second: an idle session would
// otherwise notice a spool failure only with its next output.
func (s *session) waitSession(proc *process, exited chan struct{}, st *stdio, rec *sessionRecording) {
	t := time.NewTicker(recordingCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-exited:
			return
		case <-t.C:
			rec.check()
		case <-s.ctx.Done():
			s.tellEnd(context.Cause(s.ctx), st, rec)
			proc.terminate(context.Background(), exited, hangupGrace)
			<-exited
			return
		}
	}
}

// recordingCheckInterval is how often a running session checks its
// recording for background write failures (the spool flushes each second).
const recordingCheckInterval = time.Second

// drain waits for the output pumps, then cuts them off.
func (s *session) drain(st *stdio) {
	done := make(chan struct{})
	go func() {
		s.pumps.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(drainTimeout):
	}
	// Closing a pollable file interrupts its pending read.
	for _, f := range []*os.File{st.master, st.stdout, st.stderr} {
		if f != nil {
			f.Close()
		}
	}
	<-done
}

// tellEnd shows the user why the agent ends the session.
func (s *session) tellEnd(cause error, st *stdio, rec *sessionRecording) {
	if errors.Is(cause, errClientGone) {
		return
	}
	reason := endReason(cause)
	s.mu.Lock()
	s.endedBy = cause
	s.mu.Unlock()
	s.log.Warn("agent: ending session", "reason", reason)
	rec.marker("session ended by the agent: " + reason)
	msg := "\r\n" + endMessage(cause) + "\r\n"
	if st != nil && st.master != nil {
		_, _ = io.WriteString(s.ch, msg)
	} else {
		_, _ = io.WriteString(s.ch.Stderr(), msg)
	}
}

// report closes the recording and tells the client how the session ended
// (RFC 4254 section 6.10). A session the agent ended reports the cause's
// exit status (endStatus), not the signal that stopped its processes: ssh
// would exit 255 on an exit-signal, and the user could not tell why.
func (s *session) report(ex exitInfo, rec *sessionRecording) {
	s.mu.Lock()
	fl := s.flags
	s.mu.Unlock()
	end := recorder.EndInfo{ExitStatus: ex.status, ExitSignal: ex.signal, Flags: fl.names()}
	cause := context.Cause(s.ctx)
	if s.ctx.Err() != nil {
		end.Reason = endReason(cause)
	}
	ctx := context.WithoutCancel(s.ctx)
	s.mu.Lock()
	ir, endedBy := s.inRec, s.endedBy
	s.mu.Unlock()
	if ir != nil {
		ir.flush() // hidden input typed last, without an Enter
	}
	cut := ""
	if endedBy != nil && endCut(endedBy) {
		cut = endReason(endedBy)
	}
	meta, err := rec.close(ctx, end, cut)
	if err != nil {
		s.log.Error("agent: closing the recording failed", "err", err)
	}
	detail := "exit"
	agentStatus, byAgent := endStatus(endedBy)
	switch {
	case endedBy != nil && byAgent:
		detail = fmt.Sprintf("ended by the agent (%s), exit status %d", endReason(endedBy), agentStatus)
		_, _ = s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{agentStatus}))
	case ex.status != nil:
		detail = "exit status " + strconv.Itoa(*ex.status)
		_, _ = s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(*ex.status)}))
	case ex.signal != "":
		detail = "exit signal " + ex.signal
		_, _ = s.ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Message    string
			Lang       string
		}{ex.signal, ex.core, "", ""}))
	}
	ev := s.auditEvent(AuditSessionEnd, end.Reason, detail)
	attrs := []any{"detail", detail, "reason", end.Reason}
	if meta != nil {
		attrs = append(attrs, "bytes_out", meta.BytesOut, "bytes_in", meta.BytesIn, "complete", meta.Complete)
	}
	s.log.Info("agent: session ended", attrs...)
	s.c.srv.audit(ctx, ev)
	_ = s.ch.CloseWrite()
	_ = s.ch.Close()
}
