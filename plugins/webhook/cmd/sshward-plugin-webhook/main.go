// Command sshward-plugin-webhook is sshward's webhook notifier plugin: the
// CA starts it (hashicorp/go-plugin) and hands it every audit event, which
// it POSTs as signed JSON (see package plugins/webhook). Run by hand it
// only prints a hint.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/sshward/sshward/plugins"
	"github.com/sshward/sshward/plugins/webhook"
)

func main() {
	cfg, err := webhook.ConfigFromArgs(os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sshward-plugin-webhook:", err)
		os.Exit(2)
	}
	cfg.Logger = plugins.Logger(os.Stderr, slog.LevelInfo)
	n, err := webhook.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sshward-plugin-webhook:", err)
		os.Exit(2)
	}
	plugins.ServeNotifier(n)
}
