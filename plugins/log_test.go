package plugins

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

// records captures slog records as JSON lines.
func records() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

func TestLogJSONKeepsLevelsAndFields(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   []map[string]any // level, msg and fields of each record
	}{
		{name: "hclog line", writes: []string{`{"@level":"warn","@message":"plugin slow","@module":"plugin.x","seq":3}` + "\n"},
			want: []map[string]any{{"level": "WARN", "msg": "plugin slow", "plugin": "p", "seq": "3"}}},
		{name: "split across writes", writes: []string{`{"@level":"error","@mess`, `age":"boom"}` + "\n"},
			want: []map[string]any{{"level": "ERROR", "msg": "boom", "plugin": "p"}}},
		{name: "trace is debug", writes: []string{`{"@level":"trace","@message":"t"}` + "\n"},
			want: []map[string]any{{"level": "DEBUG", "msg": "t", "plugin": "p"}}},
		{name: "not json", writes: []string{"panic: oops\n"},
			want: []map[string]any{{"level": "INFO", "msg": "panic: oops", "plugin": "p"}}},
		{name: "no newline yet", writes: []string{`{"@level":"info"`}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, buf := records()
			w := &logJSON{log: log.With("plugin", "p")}
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			var got []map[string]any
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if line == "" {
					continue
				}
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatal(err)
				}
				delete(m, "time")
				got = append(got, m)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("records %v, want %v", got, tt.want)
			}
			for i := range got {
				for k, v := range tt.want[i] {
					if got[i][k] != v {
						t.Errorf("record %d %s = %v, want %v (%v)", i, k, got[i][k], v, got[i])
					}
				}
			}
		})
	}
}

// A plugin's Logger writes what the host's logJSON reads back.
func TestPluginLoggerRoundTrip(t *testing.T) {
	var pluginStderr bytes.Buffer
	Logger(&pluginStderr, slog.LevelInfo).Warn("receiver slow", "seq", 7)
	log, buf := records()
	w := &logJSON{log: log}
	w.Write(pluginStderr.Bytes())
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	if m["level"] != "WARN" || m["msg"] != "receiver slow" || m["seq"] != "7" {
		t.Fatalf("host logged %v", m)
	}
	if !strings.HasPrefix(pluginStderr.String(), `{"@timestamp"`) {
		t.Errorf("plugin line %q does not look like hclog JSON (the stderr tail skips those)", pluginStderr.String())
	}
}

func TestTailKeepsLastPlainLines(t *testing.T) {
	var tl tail
	tl.Write([]byte(`{"@level":"info","@message":"x"}` + "\n"))
	for i := 0; i < 7; i++ {
		tl.Write([]byte("line " + string(rune('a'+i)) + "\n"))
	}
	tl.Write([]byte("x" + strings.Repeat("é", 400))) // byte 300 falls inside a rune
	got := tl.String()
	if strings.Contains(got, "@level") || strings.Contains(got, "line b") || !strings.Contains(got, "line g") || !strings.HasSuffix(got, "…)") {
		t.Fatalf("tail = %q", got)
	}
	if !utf8.ValidString(got) {
		t.Errorf("tail cut a rune: %q", got)
	}
	var empty tail
	if empty.String() != "" {
		t.Errorf("empty tail = %q", empty.String())
	}
}

func FuzzLogJSON(f *testing.F) {
	f.Add([]byte(`{"@level":"warn","@message":"m","k":[1,2]}` + "\n"))
	f.Add([]byte("plain\n\n{\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		w := &logJSON{log: slog.New(slog.DiscardHandler)}
		if n, err := w.Write(b); n != len(b) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if bytes.IndexByte(w.buf, '\n') >= 0 {
			t.Fatal("a complete line was left in the buffer")
		}
	})
}
