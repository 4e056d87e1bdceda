package agent

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// This file holds the parsers of the channel-request and channel-open
// payloads the agent accepts (RFC 4254 sections 6 and 7, OpenSSH PROTOCOL
// section 2). They are pure and fuzzed (payload_test.go): every byte of a
// payload comes from the client before or after authentication.

// Limits on client-supplied strings, far above what real clients send.
const (
	maxTermName    = 256
	maxEnvName     = 256
	maxEnvValue    = 16 << 10
	maxCommand     = 128 << 10
	maxTermSizeDim = 1<<16 - 1 // struct winsize holds unsigned shorts
	maxModes       = 1 << 10
)

func payloadErr(what string, err error) error {
	return fmt.Errorf("agent: parse %s: %w: %v", what, errPayload, err)
}

func payloadInvalid(what, why string) error {
	return fmt.Errorf("agent: parse %s: %w: %s", what, errPayload, why)
}

// ptyRequest is a parsed "pty-req" (RFC 4254 section 6.2).
type ptyRequest struct {
	Term string
	Cols int
	Rows int
	WidthPx,
	HeightPx int
	Modes []termMode
}

// termMode is one encoded terminal mode (RFC 4254 section 8).
type termMode struct {
	Op  byte
	Arg uint32
}

type ptyReqMsg struct {
	Term     string
	Cols     uint32
	Rows     uint32
	WidthPx  uint32
	HeightPx uint32
	Modes    string
}

// Default terminal size when a client sends zero (some clients do).
const (
	defaultCols = 80
	defaultRows = 24
)

func parsePtyRequest(payload []byte) (ptyRequest, error) {
	var m ptyReqMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return ptyRequest{}, payloadErr("pty-req", err)
	}
	if err := checkTermName(m.Term); err != nil {
		return ptyRequest{}, payloadInvalid("pty-req", err.Error())
	}
	cols, rows, err := termSize(m.Cols, m.Rows)
	if err != nil {
		return ptyRequest{}, payloadInvalid("pty-req", err.Error())
	}
	if len(m.Modes) > maxModes {
		return ptyRequest{}, payloadInvalid("pty-req", "terminal modes too long")
	}
	modes, err := parseTermModes([]byte(m.Modes))
	if err != nil {
		return ptyRequest{}, payloadInvalid("pty-req", err.Error())
	}
	return ptyRequest{
		Term: m.Term, Cols: cols, Rows: rows,
		WidthPx: clampPixels(m.WidthPx), HeightPx: clampPixels(m.HeightPx),
		Modes: modes,
	}, nil
}

// checkTermName accepts what terminfo names are made of; the value ends up
// in TERM and in the recording header.
func checkTermName(s string) error {
	if len(s) > maxTermName {
		return errors.New("terminal name too long")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return errors.New("terminal name has a control or non-ASCII byte")
		}
	}
	return nil
}

// termSize turns wire dimensions into a usable size: zero means the default,
// anything a struct winsize cannot hold is refused.
func termSize(cols, rows uint32) (int, int, error) {
	if cols > maxTermSizeDim || rows > maxTermSizeDim {
		return 0, 0, fmt.Errorf("terminal size %dx%d too large", cols, rows)
	}
	c, r := int(cols), int(rows)
	if c == 0 {
		c = defaultCols
	}
	if r == 0 {
		r = defaultRows
	}
	return c, r, nil
}

func clampPixels(v uint32) int {
	if v > maxTermSizeDim {
		return 0
	}
	return int(v)
}

// parseTermModes decodes RFC 4254 section 8 encoded terminal modes: opcode
// byte + uint32 argument, ended by TTY_OP_END (0). Opcodes 160 to 255 have
// undefined argument encoding and stop the parse, as the RFC says.
func parseTermModes(b []byte) ([]termMode, error) {
	var out []termMode
	for len(b) > 0 {
		op := b[0]
		if op == 0 || op >= 160 {
			return out, nil
		}
		if len(b) < 5 {
			return nil, errors.New("terminal mode cut short")
		}
		arg := uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4])
		out = append(out, termMode{Op: op, Arg: arg})
		b = b[5:]
	}
	return out, nil
}

// windowChange is a parsed "window-change" (RFC 4254 section 6.7).
type windowChange struct {
	Cols, Rows, WidthPx, HeightPx int
}

type windowChangeMsg struct {
	Cols     uint32
	Rows     uint32
	WidthPx  uint32
	HeightPx uint32
}

func parseWindowChange(payload []byte) (windowChange, error) {
	var m windowChangeMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return windowChange{}, payloadErr("window-change", err)
	}
	cols, rows, err := termSize(m.Cols, m.Rows)
	if err != nil {
		return windowChange{}, payloadInvalid("window-change", err.Error())
	}
	return windowChange{Cols: cols, Rows: rows, WidthPx: clampPixels(m.WidthPx), HeightPx: clampPixels(m.HeightPx)}, nil
}

// envRequest is a parsed "env" (RFC 4254 section 6.4).
type envRequest struct {
	Name, Value string
}

func parseEnv(payload []byte) (envRequest, error) {
	var m envRequest
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return envRequest{}, payloadErr("env", err)
	}
	switch {
	case m.Name == "" || len(m.Name) > maxEnvName:
		return envRequest{}, payloadInvalid("env", "bad variable name length")
	case strings.ContainsAny(m.Name, "=\x00"):
		return envRequest{}, payloadInvalid("env", "variable name holds '=' or NUL")
	case len(m.Value) > maxEnvValue:
		return envRequest{}, payloadInvalid("env", "value too long")
	case strings.IndexByte(m.Value, 0) >= 0:
		return envRequest{}, payloadInvalid("env", "value holds NUL")
	}
	return m, nil
}

// envAllowed is the allowlist of client-sent variables: the terminal type
// and the locale, as Debian's sshd_config AcceptEnv. Everything else
// (LD_PRELOAD, PATH, BASH_ENV…) could change what the user's shell runs.
func envAllowed(name string) bool {
	if name == "TERM" || name == "LANG" {
		return true
	}
	rest, ok := strings.CutPrefix(name, "LC_")
	if !ok || rest == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= 'A' && c <= 'Z' || c == '_') {
			return false
		}
	}
	return true
}

type stringMsg struct {
	Value string
}

// parseExec parses "exec" (RFC 4254 section 6.5): the command line, run
// by the user's shell with -c.
func parseExec(payload []byte) (string, error) {
	var m stringMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return "", payloadErr("exec", err)
	}
	switch {
	case len(m.Value) > maxCommand:
		return "", payloadInvalid("exec", "command too long")
	case strings.IndexByte(m.Value, 0) >= 0:
		return "", payloadInvalid("exec", "command holds NUL")
	}
	return m.Value, nil
}

// parseSubsystem parses "subsystem" (RFC 4254 section 6.5).
func parseSubsystem(payload []byte) (string, error) {
	var m stringMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return "", payloadErr("subsystem", err)
	}
	if m.Value == "" || len(m.Value) > 64 || strings.ContainsAny(m.Value, "\x00/ ") {
		return "", payloadInvalid("subsystem", "bad subsystem name")
	}
	return m.Value, nil
}

// signals maps RFC 4254 section 6.10 signal names to Linux signals.
var signals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE,
	"HUP": syscall.SIGHUP, "ILL": syscall.SIGILL, "INT": syscall.SIGINT,
	"KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE, "QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

// parseSignal parses "signal" (RFC 4254 section 6.9); names are without
// the "SIG" prefix and unknown names are refused.
func parseSignal(payload []byte) (syscall.Signal, error) {
	var m stringMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return 0, payloadErr("signal", err)
	}
	sig, ok := signals[m.Value]
	if !ok {
		return 0, payloadInvalid("signal", "unknown signal name")
	}
	return sig, nil
}

// signalName is the RFC 4254 name of sig for "exit-signal": the table name
// when there is one, else the Linux name without "SIG".
func signalName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return name
		}
	}
	if n := strings.TrimPrefix(unix.SignalName(sig), "SIG"); n != "" {
		return n
	}
	return fmt.Sprintf("SIG%d", int(sig))
}

type breakMsg struct {
	Millis uint32
}

// parseBreak parses "break" (RFC 4335): the break length in milliseconds.
func parseBreak(payload []byte) (uint32, error) {
	var m breakMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return 0, payloadErr("break", err)
	}
	return m.Millis, nil
}

// forwardTarget is a parsed "direct-tcpip" channel open or the payload of
// "forwarded-tcpip" (RFC 4254 section 7.2).
type forwardTarget struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

func parseDirectTCPIP(payload []byte) (forwardTarget, error) {
	var m forwardTarget
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return forwardTarget{}, payloadErr("direct-tcpip", err)
	}
	if err := checkForwardHost(m.Host); err != nil || m.Port == 0 || m.Port > 65535 {
		return forwardTarget{}, payloadInvalid("direct-tcpip", "bad target")
	}
	return m, nil
}

// forwardListen is a parsed "tcpip-forward" or "cancel-tcpip-forward"
// global request (RFC 4254 section 7.1).
type forwardListen struct {
	Addr string
	Port uint32
}

func parseTCPIPForward(payload []byte) (forwardListen, error) {
	var m forwardListen
	if err := ssh.Unmarshal(payload, &m); err != nil {
		return forwardListen{}, payloadErr("tcpip-forward", err)
	}
	if m.Addr != "" {
		if err := checkForwardHost(m.Addr); err != nil {
			return forwardListen{}, payloadInvalid("tcpip-forward", err.Error())
		}
	}
	if m.Port > 65535 {
		return forwardListen{}, payloadInvalid("tcpip-forward", "port out of range")
	}
	return m, nil
}

func checkForwardHost(h string) error {
	if h == "" || len(h) > 255 {
		return errors.New("bad host length")
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return errors.New("bad host name")
		}
	}
	return nil
}
