package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// hclogFor returns the hclog.Logger go-plugin wants, writing JSON lines
// into logJSON, which turns them into records of log: go-plugin's own
// messages (process started, exited) and the plugin's log lines, which
// go-plugin re-logs with their level.
func hclogFor(log *slog.Logger, name string) hclog.Logger {
	level := hclog.Info
	if log.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "plugin",
		Level:      level,
		Output:     &logJSON{log: log.With("plugin", name)},
		JSONFormat: true,
	})
}

// logJSON is an io.Writer for hclog's JSON lines.
type logJSON struct {
	log *slog.Logger
	mu  sync.Mutex // guards buf
	buf []byte
}

func (w *logJSON) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) == 0 {
		w.buf = nil // let a large line's array go
	}
	return len(p), nil
}

// emit logs one hclog JSON line ({"@level":…,"@message":…,…}).
func (w *logJSON) emit(line []byte) {
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		w.log.Info(string(bytes.TrimSpace(line)))
		return
	}
	level := slog.LevelInfo
	switch m["@level"] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	msg, _ := m["@message"].(string)
	keys := make([]string, 0, len(m))
	for k := range m {
		if !strings.HasPrefix(k, "@") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, fmt.Sprint(m[k]))
	}
	w.log.Log(context.Background(), level, msg, args...)
}

// tail keeps the last lines a plugin wrote to stderr that were not
// go-plugin log lines, to explain a plugin that exits at start (a missing
// flag, an unreadable secret file).
type tail struct {
	mu    sync.Mutex // guards lines
	lines []string
}

const tailLines = 5

func (t *tail) Write(p []byte) (int, error) {
	for _, l := range strings.Split(string(p), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, `{"@`) {
			continue
		}
		if len(l) > 300 {
			l = strings.ToValidUTF8(l[:300], "") + "…"
		}
		t.mu.Lock()
		t.lines = append(t.lines, l)
		if len(t.lines) > tailLines {
			t.lines = t.lines[len(t.lines)-tailLines:]
		}
		t.mu.Unlock()
	}
	return len(p), nil
}

// String is the tail for an error message: "" or ": line; line".
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return ""
	}
	return " (plugin stderr: " + strings.Join(t.lines, "; ") + ")"
}
