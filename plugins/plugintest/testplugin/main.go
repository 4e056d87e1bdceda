// Command testplugin is a plugin that does what the test asks of it, to
// exercise the host's crash, timeout and cancellation handling with a real
// process. $TESTPLUGIN_KIND picks the contract (notifier or approval),
// $TESTPLUGIN_DIR is where it reports:
//
//	DIR/pid-PID              written at start
//	DIR/busy-PID             written when a "sleep" call starts waiting
//	DIR/cancelled-ID         the ctx error a "sleep" call ended with, and
//	                         " deadline=RFC3339" when its ctx had one
//	DIR/notified             one line per delivered event seq
//
// Approval requests are steered by Reason: "sleep" (block until ctx ends),
// "deny X", "extra N", "error", "panic", "exit" (the process dies mid-call),
// "bad" (an out-of-protocol answer), "env" (answers with $SECRET and $FOO),
// anything else allows. Events by Type: "test.sleep", "test.fail",
// "test.exit"; others are appended to DIR/notified.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/plugins"
)

func main() {
	dir := os.Getenv("TESTPLUGIN_DIR")
	if dir == "" {
		fmt.Fprintln(os.Stderr, "testplugin: TESTPLUGIN_DIR is not set")
		os.Exit(2)
	}
	pid := strconv.Itoa(os.Getpid())
	if err := os.WriteFile(filepath.Join(dir, "pid-"+pid), nil, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "testplugin:", err)
		os.Exit(2)
	}
	t := tp{dir: dir, pid: pid}
	switch os.Getenv("TESTPLUGIN_KIND") {
	case "notifier":
		plugins.ServeNotifier(t)
	case "approval":
		plugins.ServeApprovalPolicy(t)
	default:
		fmt.Fprintln(os.Stderr, "testplugin: TESTPLUGIN_KIND must be notifier or approval")
		os.Exit(2)
	}
}

type tp struct{ dir, pid string }

func (t tp) sleep(ctx context.Context, id string) error {
	if err := os.WriteFile(filepath.Join(t.dir, "busy-"+t.pid), nil, 0o600); err != nil {
		return err
	}
	<-ctx.Done()
	report := ctx.Err().Error()
	if d, ok := ctx.Deadline(); ok {
		report += " deadline=" + d.UTC().Format(time.RFC3339Nano)
	}
	// Whole or not at all: the test reads it as soon as it exists.
	tmp := filepath.Join(t.dir, ".cancelled-"+id+".tmp")
	if os.WriteFile(tmp, []byte(report), 0o600) == nil {
		_ = os.Rename(tmp, filepath.Join(t.dir, "cancelled-"+id))
	}
	return ctx.Err()
}

func (t tp) Review(ctx context.Context, r ca.AccessRequestInfo) (ca.PolicyDecision, error) {
	verb, arg, _ := strings.Cut(r.Reason, " ")
	switch verb {
	case "sleep":
		return ca.PolicyDecision{}, t.sleep(ctx, r.ID)
	case "deny":
		return ca.PolicyDecision{Deny: true, Reason: arg}, nil
	case "extra":
		n, _ := strconv.Atoi(arg)
		return ca.PolicyDecision{ExtraApprovals: n, Reason: "extra " + arg}, nil
	case "error":
		return ca.PolicyDecision{}, errors.New("the test plugin was asked to fail")
	case "panic":
		panic("the test plugin was asked to panic")
	case "exit":
		os.Exit(3)
	case "bad":
		return ca.PolicyDecision{ExtraApprovals: -1}, nil
	case "env":
		return ca.PolicyDecision{Reason: "SECRET=" + os.Getenv("SECRET") + " FOO=" + os.Getenv("FOO")}, nil
	}
	return ca.PolicyDecision{Reason: "allowed by " + t.pid}, nil
}

func (t tp) Notify(ctx context.Context, ev store.AuditEvent) error {
	switch ev.Type {
	case "test.sleep":
		return t.sleep(ctx, strconv.FormatUint(ev.Seq, 10))
	case "test.fail":
		return errors.New("the test plugin was asked to fail")
	case "test.exit":
		os.Exit(3)
	}
	f, err := os.OpenFile(filepath.Join(t.dir, "notified"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%d\n", ev.Seq)
	return err
}
