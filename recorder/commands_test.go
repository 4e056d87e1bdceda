package recorder

import (
	"fmt"
	"strings"
	"testing"
)

// TestCommands: the timeline of each kind of session, from its cast.
func TestCommands(t *testing.T) {
	const hdr = `{"version":2,"width":80,"height":24}` + "\n"
	three := 3
	tests := []struct {
		name string
		meta Metadata
		cast string
		want string
	}{
		{"exec", Metadata{Kind: KindExec, Command: "uptime", ExitStatus: &three}, `[0.1,"o","up 3 days\r\n"]` + "\n",
			"[{0 uptime exec 3}]"},
		{"typed, line-edited", Metadata{Kind: KindShell, RecordInput: true},
			`[0.5,"o","$ "]` + "\n" + `[1.0,"i","ls -x"]` + "\n" + `[1.2,"i","\u007fl\r"]` + "\n" +
				`[2.0,"i","echo hi\u0015rm -rf /tmp/x"]` + "\n" + `[2.5,"i","\r"]` + "\n" + `[3.0,"i","\u001b[A\r"]` + "\n",
			"[{1.2 ls -l input <nil>} {2.5 rm -rf /tmp/x input <nil>}]"},
		{"prompts when input is not recorded", Metadata{Kind: KindShell},
			`[0.5,"o","\u001b[01;32mroot@web1\u001b[00m:~# ls -l\r\n"]` + "\n" + `[0.6,"o","total 0\r\n[alice@db1 tmp]$ make"]` + "\n" +
				`[0.9,"o"," test\r\n$ exit\r\n"]` + "\n",
			"[{0.5 ls -l prompt <nil>} {0.9 make test prompt <nil>} {0.9 exit prompt <nil>}]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd, err := NewReader(strings.NewReader(hdr + tt.cast))
			if err != nil {
				t.Fatal(err)
			}
			cmds, err := Commands(rd, tt.meta)
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, c := range cmds {
				ex := "<nil>"
				if c.ExitStatus != nil {
					ex = fmt.Sprint(*c.ExitStatus)
				}
				parts = append(parts, fmt.Sprintf("{%v %s %s %s}", c.Time, c.Command, c.Source, ex))
			}
			if got := "[" + strings.Join(parts, " ") + "]"; got != tt.want {
				t.Errorf("timeline %s\nwant     %s", got, tt.want)
			}
		})
	}
}

// FuzzCommands: any cast the reader accepts gives a timeline without
// panicking, within its bounds, of valid UTF-8 where the input was.
func FuzzCommands(f *testing.F) {
	f.Add(`{"version":2,"width":80,"height":24}`+"\n"+`[1,"i","ls\r"]`+"\n", true)
	f.Add(`{"version":2,"width":80,"height":24}`+"\n"+`[1,"o","root@h:~# ls\r\n"]`+"\n", false)
	f.Add(`{"version":2,"width":80,"height":24}`+"\n"+`[1,"i","\u001b[1;5Cx\u0017\u0015\r"]`+"\n", true)
	f.Fuzz(func(t *testing.T, cast string, input bool) {
		rd, err := NewReader(strings.NewReader(cast))
		if err != nil {
			return
		}
		cmds, _ := Commands(rd, Metadata{Kind: KindShell, RecordInput: input})
		if len(cmds) > MaxTimelineCommands {
			t.Fatalf("%d commands", len(cmds))
		}
		for _, c := range cmds {
			if strings.TrimSpace(c.Command) == "" || len(c.Command) > maxEditLine+1 {
				t.Fatalf("command %q", c.Command)
			}
		}
	})
}

// FuzzLineEditor: a line never exceeds its bound, and plain text typed
// after ^U (once any open escape sequence has ended) comes back as typed.
func FuzzLineEditor(f *testing.F) {
	f.Add([]byte("rm -rf /\x7f\x15ls\r"), "echo ok")
	f.Add([]byte("\x1b[A\x1bOB\x17\x03"), "x")
	f.Fuzz(func(t *testing.T, keys []byte, plain string) {
		var e LineEditor
		for _, l := range e.Feed(keys) {
			if len(l) > maxEditLine {
				t.Fatalf("line of %d bytes", len(l))
			}
		}
		for _, r := range plain {
			if r < 0x20 || r == 0x7f {
				return
			}
		}
		if strings.TrimSpace(plain) == "" || len(plain) > maxEditLine {
			return
		}
		// Whatever escape sequence keys left open ends within 16 bytes.
		e.Feed([]byte(strings.Repeat("\x00", 17)))
		got := e.Feed([]byte("\x15" + plain + "\r"))
		if len(got) != 1 || string(got[0]) != plain {
			t.Fatalf("typed %q after ^U, rebuilt %q", plain, got)
		}
	})
}
