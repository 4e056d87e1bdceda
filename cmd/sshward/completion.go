package main

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/sshward/sshward/cmd/internal/cli"
)

// cmdCompletion prints a bash or zsh completion script:
//
//	source <(sshward completion bash)          # ~/.bashrc
//	sshward completion zsh > "${fpath[1]}/_sshward"
func (e *env) cmdCompletion(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward completion bash|zsh")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cli.Usagef("completion needs a shell: bash or zsh")
	}
	d, err := e.doc(ctx)
	if err != nil {
		return err
	}
	switch pos[0] {
	case "bash":
		_, err = fmt.Fprint(e.stdout, d.Bash())
	case "zsh":
		_, err = fmt.Fprint(e.stdout, d.Zsh())
	default:
		return cli.Usagef("completion for %q: bash and zsh are supported", pos[0])
	}
	return err
}

// cmdMan prints the manual page (roff): `sshward man | man -l -`.
func (e *env) cmdMan(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward man")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	d, err := e.doc(ctx)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(e.stdout, d.Man(1, e.now()))
	return err
}

// doc reads sshward's verbs and flags from its own help: the usage text
// names the verbs, and `sshward VERB --help` each verb's flags.
func (e *env) doc(ctx context.Context) (cli.Doc, error) {
	d := cli.Doc{Name: "sshward", Summary: "short-lived SSH certificates from your sshward CA", Usage: usage}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, verb := range cli.VerbsOf("sshward", usage) {
		out, err := exec.CommandContext(ctx, e.exe, verb, "--help").Output()
		if err != nil {
			return d, fmt.Errorf("read the flags of %q from %s: %w", verb, e.exe, err)
		}
		d.Verbs = append(d.Verbs, cli.ParseVerbHelp(verb, string(out)))
	}
	return d, nil
}
