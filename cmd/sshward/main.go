// Command sshward is the client for engineers, approvers and auditors: it
// logs in to the CA, fetches short-lived SSH certificates into
// $SSHWARD_HOME, writes the ssh_config block that fetches them on demand,
// and shows what it holds.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sshward/sshward/cmd/internal/cli"
)

const usage = `sshward: short-lived SSH certificates from your sshward CA

usage:
  sshward login --ca URL --fingerprint FP [--user NAME --password-stdin [--otp CODE]] [--oidc [--device]]
  sshward cert --tier T [--principal P] [--request ID] [--ttl D] [--json] [--ensure]
  sshward ssh-config [--tier T …]     print the ssh_config block that fetches certificates on demand
  sshward status [--json]             who you are, which certificates you hold, when they expire
  sshward request --tier T --reason TEXT [--principal P] [--ttl D] [--json]
                                      ask for a tier that needs approvals (break-glass)
  sshward requests [--all] [--json]   your requests and those you may approve
  sshward approve ID [--reason TEXT]  approve someone else's request
  sshward deny ID --reason TEXT       deny a request (or withdraw your own)
  sshward sessions [--user U --host H --tier T --since D --grep TEXT --break-glass --live --flagged] [--limit N | --all] [--json]
                                      recorded sessions on the playback server (auditors), newest
                                      first, 100 unless --limit or --all (stderr says when cut)
  sshward play ID [--speed N --idle-limit S]   replay a session in this terminal (q, space, ←/→)
  sshward play ID --commands [--json] the commands run, with time offsets and exit status where known
  sshward export ID > session.cast    the asciicast v2 recording, for asciinema or any player
  sshward export ID --output-bytes > FILE   the exact bytes the session sent (binary too);
                                      --blob FILE also saves the raw binary output the cast references
  sshward terminate ID --reason TEXT [--lock-user]   end a live session (auditors): the user reads the reason
  sshward logout
  sshward completion bash|zsh         shell completion: source <(sshward completion bash)
  sshward man                         this manual as a man page: sshward man | man -l -

State lives in $SSHWARD_HOME (default ~/.sshward). Every verb takes --help.
Exit status: 0 ok, 1 refused or failed, 2 usage.
`

func main() {
	ctx, stop := cli.SignalContext()
	code := cli.Exit("sshward", run(ctx, os.Args[1:], newEnv()), os.Stderr)
	stop()
	os.Exit(code)
}

// env is the process environment the verbs use; tests replace parts of it.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	// tty opens the controlling terminal for prompts (nil: none).
	tty func() (io.ReadWriteCloser, error)
	// exe is this binary's path, written into the ssh_config block.
	exe string
}

func newEnv() *env {
	exe, err := os.Executable()
	if err != nil {
		exe = "sshward"
	}
	return &env{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, now: time.Now, exe: exe,
		tty: func() (io.ReadWriteCloser, error) { return os.OpenFile("/dev/tty", os.O_RDWR, 0) },
	}
}

func run(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return cli.Usagef("a verb is required")
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(e.stdout, usage)
		return nil
	case "login":
		return e.cmdLogin(ctx, args[1:])
	case "logout":
		return e.cmdLogout(ctx, args[1:])
	case "cert":
		return e.cmdCert(ctx, args[1:])
	case "status":
		return e.cmdStatus(ctx, args[1:])
	case "ssh-config":
		return e.cmdSSHConfig(ctx, args[1:])
	case "request":
		return e.cmdRequest(ctx, args[1:])
	case "requests":
		return e.cmdRequests(ctx, args[1:])
	case "approve":
		return e.cmdDecide(ctx, args[1:], false)
	case "deny":
		return e.cmdDecide(ctx, args[1:], true)
	case "sessions":
		return e.cmdSessions(ctx, args[1:])
	case "play":
		return e.cmdPlay(ctx, args[1:])
	case "export":
		return e.cmdExport(ctx, args[1:])
	case "terminate":
		return e.cmdTerminate(ctx, args[1:])
	case "completion":
		return e.cmdCompletion(ctx, args[1:])
	case "man":
		return e.cmdMan(ctx, args[1:])
	}
	return cli.Usagef("unknown verb %q", args[0])
}
