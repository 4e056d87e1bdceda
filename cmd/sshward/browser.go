package main

import (
	"context"
	"os/exec"
)

// startBrowser runs the user's $SSHWARD_BROWSER command with the URL.
func startBrowser(ctx context.Context, command, url string) error {
	cmd := exec.CommandContext(ctx, command, url)
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}
