// Package cli holds what the sshward commands share: flags that may follow
// positional arguments, the exit-status contract (1 refusal, 2 usage), one
// clear sentence on stderr, JSON output and the slog setup.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// UsageError is a malformed command line (exit status 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// ErrSilent ends a command with exit status 1 and prints nothing: for
// checks whose failure is an answer, not a problem (ssh_config Match exec).
var ErrSilent = errors.New("silent failure")

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// Exit prints err as one sentence and returns the process exit status:
// 0 for nil, 2 for usage errors and -h, 1 for everything else.
func Exit(prog string, err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, ErrSilent) {
		return 1
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "%s: %s (see %s --help)\n", prog, ue.Msg, prog)
		return 2
	}
	msg := err.Error()
	msg = strings.TrimSpace(msg)
	fmt.Fprintf(stderr, "%s: %s\n", prog, msg)
	return 1
}

// Parse parses flags that may come before, between or after positional
// arguments (`users add alice --groups sre`), and returns the positionals.
// A literal "--" ends flag parsing.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printUsage(fs)
				return nil, err
			}
			return nil, Usagef("%s", strings.TrimPrefix(err.Error(), "flag provided but not defined: "))
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func printUsage(fs *flag.FlagSet) {
	fs.SetOutput(os.Stdout)
	fmt.Fprintf(os.Stdout, "usage: %s\n", fs.Name())
	fs.PrintDefaults()
}

// NewFlagSet returns a FlagSet whose usage line is name.
func NewFlagSet(name string) *flag.FlagSet {
	return flag.NewFlagSet(name, flag.ContinueOnError)
}

// JSON writes v as indented JSON.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Logger returns a slog logger writing to w; format is "text" or "json",
// level one of debug, info, warn, error.
func Logger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, Usagef("--log-level %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, Usagef("--log-format %q is not text or json", format)
}

// SignalContext is canceled on SIGINT or SIGTERM, and on the extra
// signals given (the demo adds SIGHUP: its terminal closed).
func SignalContext(extra ...os.Signal) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), append([]os.Signal{os.Interrupt, syscall.SIGTERM}, extra...)...)
}

// ReadSecretLine reads one line (a password) from r, without the newline.
func ReadSecretLine(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < 4096 {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				break
			}
			b.WriteByte(buf[0])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimSuffix(b.String(), "\r"), nil
}

// StringList is a flag that may repeat and takes comma-separated values.
type StringList []string

func (s *StringList) String() string { return strings.Join(*s, ",") }

// Set adds the comma-separated values of v.
func (s *StringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}
