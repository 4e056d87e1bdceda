package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// cmdTerminate ends a live session (issue 13 §1): through the playback
// server, which knows the session's host and tier, with a reader token;
// the CA decides (policy terminate_groups) and orders the host's agent.
func (e *env) cmdTerminate(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward terminate ID --reason TEXT [--lock-user] [--json] [--playback URL]")
	reason := fs.String("reason", "", "why the session is ended: the user reads it, the recording and the audit log keep it (required)")
	lock := fs.Bool("lock-user", false, "also disable the user at the CA: no login and no new certificate until sshward-ca users enable")
	asJSON := fs.Bool("json", false, "print the answer as JSON (session_id, by, at, locked)")
	override := fs.String("playback", "", "playback server URL (default: the one the CA knows)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	id, err := sessionArg(pos)
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return cli.Usagef("--reason TEXT is required: say why the session is ended")
	}
	pc, err := e.playback(ctx, *override)
	if err != nil {
		return err
	}
	var out api.TerminateResponse
	if err := pc.postJSON(ctx, "/api/sessions/"+url.PathEscape(id)+"/terminate",
		map[string]any{"reason": *reason, "lock_user": *lock}, &out); err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "session %s terminated by %s; its host ends it within seconds\n", out.SessionID, out.By)
	if *lock {
		if out.Locked {
			fmt.Fprintln(e.stdout, "the user is disabled at the CA until an administrator runs sshward-ca users enable")
		} else {
			fmt.Fprintln(e.stderr, "sshward: the user is not a local user of the CA and was not disabled: remove them at the identity provider")
		}
	}
	return nil
}

// postJSON posts in to the playback server and decodes its answer; a
// refusal carries the server's (or the CA's) sentence.
func (p *playbackClient) postJSON(ctx context.Context, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("playback: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the playback server at %s (%v): check --playback or ask your admin", p.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return &refusal{status: resp.StatusCode, err: errors.New("no such session on the playback server (sshward sessions --live lists running ones)")}
		case e.Message != "":
			return &refusal{status: resp.StatusCode, err: fmt.Errorf("refused: %s", e.Message)}
		}
		return &refusal{status: resp.StatusCode, err: fmt.Errorf("the playback server answered %s", resp.Status)}
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return fmt.Errorf("the playback server sent an answer this sshward cannot read (%v): update sshward", err)
	}
	return nil
}
