package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder/atrest"
)

const auditUsage = "sshward-playback audit verify --dir DIR [--json]"

// auditVerifyResult is what audit verify --json prints; the fields are
// those of sshward-ca audit verify --json, so one script reads both.
type auditVerifyResult struct {
	OK      bool   `json:"ok"`
	Records uint64 `json:"records"`
	Head    string `json:"head,omitempty"`
	Error   string `json:"error,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
}

// audit checks the playback audit log's hash chain (every view, ingest and
// purge is an event in it), with the server stopped: bbolt lets one
// process hold the index.
func audit(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return cli.Usagef("usage: %s", auditUsage)
	}
	fs := cli.NewFlagSet(auditUsage)
	dir := fs.String("dir", "", "the playback server's directory")
	asJSON := fs.Bool("json", false, "print JSON (ok, records, head, error, seq)")
	if _, err := cli.Parse(fs, args[1:]); err != nil {
		return err
	}
	if *dir == "" {
		return cli.Usagef("--dir is required")
	}
	st, err := openStopped(ctx, *dir, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	var res auditVerifyResult
	rep, verr := st.VerifyAudit(ctx)
	res.OK, res.Records, res.Head = verr == nil, rep.Events, rep.Head
	if verr != nil {
		res.Error = verr.Error()
		var ce *store.ChainError
		if errors.As(verr, &ce) {
			res.Seq = ce.Seq
		}
	}
	if *asJSON {
		if err := cli.JSON(stdout, res); err != nil {
			return err
		}
	} else if res.OK {
		fmt.Fprintf(stdout, "audit chain intact: %d records, head %.12s\n", res.Records, res.Head)
	}
	if !res.OK {
		return fmt.Errorf("audit chain broken: %s", res.Error)
	}
	return nil
}

// openStopped opens the index in dir for an offline verb: bbolt lets one
// process hold it, so a running server must be stopped first.
// keys (config.yaml's recordings.encryption) reads encrypted recordings.
func openStopped(ctx context.Context, dir string, keys *atrest.Keys) (*store.Store, error) {
	st, err := store.Open(ctx, store.Config{Dir: dir, Keys: keys})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("the index in %s is in use: stop sshward-playback first", dir)
	}
	return st, err
}
