// Command sshward-plugin-oncall is sshward's example approval-policy
// plugin: a ticket pattern for the reason and an on-call schedule decide
// whether a request is denied or needs an extra approval (see package
// plugins/oncall). The CA starts it; run by hand it only prints a hint.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sshward/sshward/plugins"
	"github.com/sshward/sshward/plugins/oncall"
)

func main() {
	fs := flag.NewFlagSet("sshward-plugin-oncall", flag.ExitOnError)
	schedule := fs.String("schedule", os.Getenv("SSHWARD_ONCALL_SCHEDULE"), "schedule file (YAML)")
	_ = fs.Parse(os.Args[1:])
	if *schedule == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "sshward-plugin-oncall: usage: sshward-plugin-oncall --schedule FILE")
		os.Exit(2)
	}
	p, err := oncall.NewPolicy(*schedule, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sshward-plugin-oncall:", err)
		os.Exit(2)
	}
	plugins.ServeApprovalPolicy(p)
}
