package agent

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Round trips: what x/crypto/ssh's client marshals, the agent parses back.

func TestParsePtyRequest(t *testing.T) {
	modes := []byte{53, 0, 0, 0, 1, 128, 0, 0, 0x96, 0, 0} // ECHO=1, TTY_OP_ISPEED=38400, END
	tests := []struct {
		name    string
		msg     ptyReqMsg
		want    ptyRequest
		wantErr bool
	}{
		{"xterm", ptyReqMsg{"xterm-256color", 120, 40, 800, 600, string(modes)},
			ptyRequest{Term: "xterm-256color", Cols: 120, Rows: 40, WidthPx: 800, HeightPx: 600, Modes: []termMode{{53, 1}, {128, 38400}}}, false},
		{"zero size means default", ptyReqMsg{"vt100", 0, 0, 0, 0, ""}, ptyRequest{Term: "vt100", Cols: 80, Rows: 24}, false},
		{"too large", ptyReqMsg{"xterm", 70000, 24, 0, 0, ""}, ptyRequest{}, true},
		{"control byte in TERM", ptyReqMsg{"xterm\x1b[", 80, 24, 0, 0, ""}, ptyRequest{}, true},
		{"modes cut short", ptyReqMsg{"xterm", 80, 24, 0, 0, "\x35\x00"}, ptyRequest{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePtyRequest(ssh.Marshal(tt.msg))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, errPayload) {
					t.Errorf("err %v is not errPayload", err)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := parsePtyRequest(append(ssh.Marshal(tests[0].msg), 0)); err == nil {
		t.Error("trailing byte accepted")
	}
}

func TestParseSmallPayloads(t *testing.T) {
	if w, err := parseWindowChange(ssh.Marshal(windowChangeMsg{132, 43, 0, 0})); err != nil || w.Cols != 132 || w.Rows != 43 {
		t.Errorf("window-change = %+v, %v", w, err)
	}
	if e, err := parseEnv(ssh.Marshal(envRequest{"LANG", "C.UTF-8"})); err != nil || e.Name != "LANG" {
		t.Errorf("env = %+v, %v", e, err)
	}
	for _, bad := range []envRequest{{"", "x"}, {"A=B", "x"}, {"A", "x\x00y"}} {
		if _, err := parseEnv(ssh.Marshal(bad)); err == nil {
			t.Errorf("env %+v accepted", bad)
		}
	}
	if c, err := parseExec(ssh.Marshal(stringMsg{"echo hi"})); err != nil || c != "echo hi" {
		t.Errorf("exec = %q, %v", c, err)
	}
	if _, err := parseExec(ssh.Marshal(stringMsg{"a\x00b"})); err == nil {
		t.Error("exec with NUL accepted")
	}
	if s, err := parseSignal(ssh.Marshal(stringMsg{"TERM"})); err != nil || s != syscall.SIGTERM {
		t.Errorf("signal = %v, %v", s, err)
	}
	if _, err := parseSignal(ssh.Marshal(stringMsg{"STOP"})); err == nil {
		t.Error("signal STOP (not in RFC 4254) accepted")
	}
	if n, err := parseSubsystem(ssh.Marshal(stringMsg{"sftp"})); err != nil || n != "sftp" {
		t.Errorf("subsystem = %q, %v", n, err)
	}
	if ft, err := parseDirectTCPIP(ssh.Marshal(forwardTarget{"db.internal", 5432, "127.0.0.1", 40000})); err != nil || ft.Port != 5432 {
		t.Errorf("direct-tcpip = %+v, %v", ft, err)
	}
	if _, err := parseDirectTCPIP(ssh.Marshal(forwardTarget{"h", 70000, "o", 1})); err == nil {
		t.Error("port 70000 accepted")
	}
	if fl, err := parseTCPIPForward(ssh.Marshal(forwardListen{"", 0})); err != nil || fl.Port != 0 {
		t.Errorf("tcpip-forward = %+v, %v", fl, err)
	}
	if name := signalName(syscall.SIGUSR1); name != "USR1" {
		t.Errorf("signalName(USR1) = %q", name)
	}
	if name := signalName(syscall.SIGSTOP); name != "STOP" {
		t.Errorf("signalName(STOP) = %q", name)
	}
}

func TestEnvAllowed(t *testing.T) {
	for name, want := range map[string]bool{
		"TERM": true, "LANG": true, "LC_ALL": true, "LC_CTYPE": true,
		"LC_": false, "LC_all": false, "LD_PRELOAD": false, "PATH": false, "BASH_ENV": false, "LANGUAGE": false,
	} {
		if got := envAllowed(name); got != want {
			t.Errorf("envAllowed(%q) = %v, want %v", name, got, want)
		}
	}
}

// Fuzz targets: whatever the client sends, parsing neither panics nor
// lets through what the checks refuse; valid payloads round-trip.

func FuzzParsePtyRequest(f *testing.F) {
	f.Add(ssh.Marshal(ptyReqMsg{"xterm", 80, 24, 0, 0, "\x35\x00\x00\x00\x01\x00"}))
	f.Add(ssh.Marshal(ptyReqMsg{"", 0, 0, 0, 0, ""}))
	f.Add([]byte{0, 0, 0, 5, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePtyRequest(b)
		if err != nil {
			return
		}
		if p.Cols < 1 || p.Rows < 1 || p.Cols > maxTermSizeDim || p.Rows > maxTermSizeDim {
			t.Fatalf("size %dx%d out of range", p.Cols, p.Rows)
		}
		if checkTermName(p.Term) != nil {
			t.Fatalf("term %q passed", p.Term)
		}
		for _, m := range p.Modes {
			if m.Op == 0 || m.Op >= 160 {
				t.Fatalf("mode opcode %d kept", m.Op)
			}
		}
	})
}

func FuzzParseTermModes(f *testing.F) {
	f.Add([]byte{53, 0, 0, 0, 1, 0})
	f.Add([]byte{1, 0, 0, 0, 3, 3, 0, 0, 0, 127, 160, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		modes, err := parseTermModes(b)
		if err != nil {
			return
		}
		// Re-encoding what was parsed gives a prefix of the input.
		var enc []byte
		for _, m := range modes {
			enc = append(enc, m.Op, byte(m.Arg>>24), byte(m.Arg>>16), byte(m.Arg>>8), byte(m.Arg))
		}
		if !bytes.HasPrefix(b, enc) {
			t.Fatalf("modes %v do not re-encode to a prefix of %x", modes, b)
		}
	})
}

func FuzzParseEnv(f *testing.F) {
	f.Add(ssh.Marshal(envRequest{"LANG", "C.UTF-8"}))
	f.Add(ssh.Marshal(envRequest{"LD_PRELOAD", "/x.so"}))
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseEnv(b)
		if err != nil {
			return
		}
		if e.Name == "" || strings.ContainsAny(e.Name, "=\x00") || strings.Contains(e.Value, "\x00") {
			t.Fatalf("env %q passed", e)
		}
		if back, err := parseEnv(ssh.Marshal(e)); err != nil || back != e {
			t.Fatalf("round trip: %+v, %v", back, err)
		}
	})
}

func FuzzParseWindowChange(f *testing.F) {
	f.Add(ssh.Marshal(windowChangeMsg{120, 40, 0, 0}))
	f.Add(ssh.Marshal(windowChangeMsg{1 << 31, 1, 1, 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := parseWindowChange(b)
		if err != nil {
			return
		}
		if w.Cols < 1 || w.Rows < 1 || w.Cols > maxTermSizeDim || w.Rows > maxTermSizeDim {
			t.Fatalf("size %dx%d out of range", w.Cols, w.Rows)
		}
	})
}

func FuzzParseExec(f *testing.F) {
	f.Add(ssh.Marshal(stringMsg{"echo hi"}))
	f.Add(ssh.Marshal(stringMsg{"a\x00b"}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseExec(b)
		if err != nil {
			return
		}
		if strings.Contains(c, "\x00") || len(c) > maxCommand {
			t.Fatalf("command %q passed", c)
		}
		if back, err := parseExec(ssh.Marshal(stringMsg{c})); err != nil || back != c {
			t.Fatalf("round trip: %q, %v", back, err)
		}
	})
}

func FuzzParseSignal(f *testing.F) {
	f.Add(ssh.Marshal(stringMsg{"INT"}))
	f.Add(ssh.Marshal(stringMsg{"SIGKILL"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		sig, err := parseSignal(b)
		if err != nil {
			return
		}
		if signals[signalName(sig)] != sig {
			t.Fatalf("signal %v does not map back", sig)
		}
	})
}

func FuzzParseForwards(f *testing.F) {
	f.Add(ssh.Marshal(forwardTarget{"127.0.0.1", 22, "10.0.0.1", 5555}))
	f.Add(ssh.Marshal(forwardListen{"localhost", 0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ft, err := parseDirectTCPIP(b); err == nil && (ft.Port == 0 || ft.Port > 65535 || checkForwardHost(ft.Host) != nil) {
			t.Fatalf("direct-tcpip %+v passed", ft)
		}
		if fl, err := parseTCPIPForward(b); err == nil && fl.Port > 65535 {
			t.Fatalf("tcpip-forward %+v passed", fl)
		}
	})
}

func FuzzParsePasswdLine(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/bash")
	f.Add("bad line")
	f.Add("#comment:x:0:0::/:/bin/sh")
	f.Fuzz(func(t *testing.T, line string) {
		e, ok := parsePasswdLine(line)
		if ok && (e.name == "" || strings.Contains(e.name, ":") || strings.Contains(e.shell, ":")) {
			t.Fatalf("entry %+v from %q", e, line)
		}
	})
}
