package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/sshward/sshward/cmd/internal/cli"
)

// timelineCommand is one entry of GET /api/sessions/{id}/commands
// (recorder.Command).
type timelineCommand struct {
	Time       float64 `json:"time"`
	Command    string  `json:"command"`
	Source     string  `json:"source"`
	ExitStatus *int    `json:"exit_status,omitempty"`
}

// printCommands prints a session's command timeline (issue 13 §3).
func (e *env) printCommands(ctx context.Context, id, override string, asJSON bool) error {
	pc, err := e.playback(ctx, override)
	if err != nil {
		return err
	}
	var resp struct {
		Commands  []timelineCommand `json:"commands"`
		Live      bool              `json:"live"`
		Integrity string            `json:"integrity"`
	}
	if err := pc.getJSON(ctx, "/api/sessions/"+url.PathEscape(id)+"/commands", nil, &resp); err != nil {
		return err
	}
	if resp.Commands == nil {
		resp.Commands = []timelineCommand{}
	}
	if resp.Integrity == integrityFailed {
		fmt.Fprintf(e.stderr, "sshward: WARNING: recording %s fails its integrity check; these commands may have been tampered with\n", id)
	}
	if asJSON {
		return cli.JSON(e.stdout, resp.Commands)
	}
	if len(resp.Commands) == 0 {
		fmt.Fprintln(e.stdout, "no commands found in this recording (a shell whose input is not recorded shows only what follows a prompt)")
		return nil
	}
	for _, c := range resp.Commands {
		exit := ""
		if c.ExitStatus != nil {
			exit = "  exit " + strconv.Itoa(*c.ExitStatus)
		}
		src := ""
		if c.Source == "prompt" {
			src = "  (from the prompt)"
		}
		fmt.Fprintf(e.stdout, "%s  %s%s%s\n", offset(c.Time), printableText(c.Command), exit, src)
	}
	if resp.Live {
		fmt.Fprintln(e.stderr, "sshward: the session is still running: this is the timeline so far")
	}
	return nil
}
