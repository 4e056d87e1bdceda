// Command sshward-ca is the sshward certificate authority: init, serve, and
// the admin verbs (users, join-token, revoke, trust, audit, sessions) that
// work both while serve runs (through DIR/admin.sock) and offline.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/sshward/sshward/cmd/internal/cli"
)

const usage = `sshward-ca: the sshward SSH certificate authority

usage:
  sshward-ca init --dir DIR [--json] [--name NAME] [--tls-name HOST …]
  sshward-ca serve --dir DIR [--listen ADDR]
  sshward-ca users add NAME --groups G1,G2 [--totp] --password-stdin [--json]
  sshward-ca users list [--json] | remove NAME | passwd NAME --password-stdin
  sshward-ca trust --dir DIR --tier T | --hosts
  sshward-ca join-token --dir DIR --host NAME[,NAME…] --tier T [--ttl D] [--json]
  sshward-ca join-token --dir DIR --playback NAME [--ttl D] [--json]
  sshward-ca revoke --dir DIR --serial N | --key-id ID | --user NAME [--tier T] [--reason TEXT]
  sshward-ca audit list|verify --dir DIR [--json]
  sshward-ca sessions --dir DIR [--json]
  sshward-ca backup --dir DIR --to FILE [--json]     consistent snapshot while serving, encrypted (age) to the passphrase
  sshward-ca restore --from FILE --dir NEWDIR [--json]
  sshward-ca review --dir DIR [--since 90d] [--unused] [--json|--csv]   access review: who could, who did, unused rights
  sshward-ca oncall --dir DIR [--at TIME] [--json]   who is on call in each rotation, and until when
  sshward-ca keys rotate --dir DIR --tier T [--overlap 24h] [--json]   new signing key; the old one stays trusted for the overlap
  sshward-ca keys retire --dir DIR --tier T [--force] [--json]         stop trusting the old key (automatic at the overlap's end)
  sshward-ca keys list --dir DIR [--json]
  sshward-ca review signoff --dir DIR --user U --tier T --decision keep|remove --reviewer NAME [--reason TEXT]

The CA passphrase comes from $SSHWARD_CA_PASSPHRASE or --passphrase-file FILE.
Every verb takes --help. Exit status: 0 ok, 1 refused or failed, 2 usage.
`

func main() {
	ctx, stop := cli.SignalContext()
	code := cli.Exit("sshward-ca", run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usagef("a verb is required")
	}
	env := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "init":
		return env.cmdInit(ctx, args[1:])
	case "serve":
		return env.cmdServe(ctx, args[1:])
	case "users":
		return env.cmdUsers(ctx, args[1:])
	case "trust":
		return env.cmdTrust(ctx, args[1:])
	case "join-token":
		return env.cmdJoinToken(ctx, args[1:])
	case "revoke":
		return env.cmdRevoke(ctx, args[1:])
	case "audit":
		return env.cmdAudit(ctx, args[1:])
	case "sessions":
		return env.cmdSessions(ctx, args[1:])
	case "backup":
		return env.cmdBackup(ctx, args[1:])
	case "restore":
		return env.cmdRestore(ctx, args[1:])
	case "review":
		return env.cmdReview(ctx, args[1:])
	case "oncall":
		return env.cmdOnCall(ctx, args[1:])
	case "keys":
		return env.cmdKeys(ctx, args[1:]) // rotate.go
	}
	return cli.Usagef("unknown verb %q", args[0])
}

// env is what every verb reads and writes; tests run verbs with buffers.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}
