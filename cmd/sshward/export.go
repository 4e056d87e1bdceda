package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"

	"golang.org/x/term"

	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/recorder"
)

// cmdExport writes a recording to standard output: the asciicast as stored
// (default), or with --output-bytes the exact bytes the session sent (text
// and side blob put back together, recorder.ExactOutputBytes). --blob FILE
// also saves the side blob, the raw binary output the cast references.
func (e *env) cmdExport(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward export ID [--playback URL] [--allow-tampered] [--blob FILE] [--output-bytes] [--encrypted] > FILE")
	override := fs.String("playback", "", "playback server URL (default: the one the CA knows)")
	allowTampered := fs.Bool("allow-tampered", false, "export a recording that fails its integrity check, to examine it")
	outputBytes := fs.Bool("output-bytes", false, "write the exact bytes the session sent to the client (stdout and stderr as recorded), not the asciicast")
	blobPath := fs.String("blob", "", "also save the recording's side blob (its binary output, raw) to `FILE`")
	encrypted := fs.Bool("encrypted", false, "write the asciicast age-encrypted to the playback server's recordings.encryption recipients (decrypt with age -d -i KEY)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	id, err := sessionArg(pos)
	if err != nil {
		return err
	}
	if *encrypted && (*outputBytes || *blobPath != "") {
		return cli.Usagef("export --encrypted writes the encrypted asciicast only: it cannot be combined with --output-bytes or --blob")
	}
	if f, ok := e.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if *outputBytes {
			return cli.Usagef("export --output-bytes writes the session's output to standard output: redirect it, e.g. sshward export %s --output-bytes > %s.out", id, id)
		}
		return cli.Usagef("export writes the asciicast file to standard output: redirect it, e.g. sshward export %s > %s.cast", id, id)
	}
	pc, err := e.playback(ctx, *override)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *allowTampered {
		q.Set("allow_tampered", "1")
	}
	if *encrypted {
		q.Set("encrypted", "1")
	}
	if !*outputBytes && *blobPath == "" {
		return e.exportCast(ctx, pc, id, q, e.stdout)
	}

	var d struct {
		Live      bool              `json:"live"`
		Integrity string            `json:"integrity"`
		Metadata  recorder.Metadata `json:"metadata"`
	}
	if err := pc.getJSON(ctx, "/api/sessions/"+url.PathEscape(id), nil, &d); err != nil {
		return err
	}
	if d.Live && *outputBytes {
		return fmt.Errorf("session %s is still live: export its output bytes once it ended (sshward play %s follows it)", id, id)
	}
	m := d.Metadata
	var blob *os.File
	if m.Blob != nil {
		if blob, err = e.exportBlob(ctx, pc, id, q, m.Blob, *blobPath); err != nil {
			return err
		}
		defer func() {
			blob.Close()
			if *blobPath == "" {
				os.Remove(blob.Name())
			}
		}()
	} else if *blobPath != "" {
		// Nothing to save; an empty file, so that scripts find what they asked for.
		if err := os.WriteFile(*blobPath, nil, 0o600); err != nil {
			return fmt.Errorf("cannot write %s: %w", *blobPath, err)
		}
		fmt.Fprintf(e.stderr, "sshward: recording %s has no blob: all of its output is text in the cast; %s is empty\n", id, *blobPath)
	}
	if !*outputBytes {
		return e.exportCast(ctx, pc, id, q, e.stdout)
	}

	cast, err := os.CreateTemp("", "sshward-export-*.cast")
	if err != nil {
		return fmt.Errorf("cannot make a temporary file: %w", err)
	}
	defer os.Remove(cast.Name())
	defer cast.Close()
	if err := e.exportCast(ctx, pc, id, q, cast); err != nil {
		return err
	}
	if _, err := cast.Seek(0, io.SeekStart); err != nil {
		return err
	}
	var ra io.ReaderAt
	if blob != nil {
		ra = blob
	}
	_, err = recorder.ExactOutputBytes(m, cast, ra, e.stdout)
	switch {
	case errors.Is(err, recorder.ErrBlobCut):
		return fmt.Errorf("recording %s kept only the first %d of the %d bytes of binary output its session sent (the tier's bulk_output cap); "+
			"the sha256 of all of them is %s: sshward export %s --blob FILE saves what was kept",
			id, m.Blob.Bytes, m.Blob.StreamBytes, m.Blob.StreamSHA256, id)
	case err != nil:
		return fmt.Errorf("cannot put the output of %s back together (%v): export the cast and the blob (--blob FILE) to examine them", id, err)
	case !m.Complete:
		// What was written is all that was recorded, but not all that was
		// sent: say so, and fail, so that no checksum is taken for whole.
		return fmt.Errorf("recording %s is incomplete (%s): the bytes written are only the output that was recorded", id, m.Incomplete)
	}
	return nil
}

// exportCast copies the recording's asciicast to w, warning when it fails
// its integrity check (which only allow_tampered lets through).
func (e *env) exportCast(ctx context.Context, pc *playbackClient, id string, q url.Values, w io.Writer) error {
	resp, err := pc.do(ctx, "/api/sessions/"+url.PathEscape(id)+"/export", q, "application/x-asciicast")
	if err != nil {
		return err
	}
	body := resp.Body
	defer body.Close()
	if resp.Header.Get("X-Sshward-Integrity") == integrityFailed {
		fmt.Fprintf(e.stderr, "sshward: WARNING: recording %s fails its integrity check; the exported bytes may have been tampered with\n", id)
	}
	if _, err := io.Copy(w, body); err != nil {
		return fmt.Errorf("export %s stopped part way (%v): run it again", id, err)
	}
	return nil
}

// exportBlob downloads the side blob into path (a temporary file when
// empty) and checks it against the signed size and sha256 the server's
// metadata names: the server checked it too, this catches what happened
// on the way.
func (e *env) exportBlob(ctx context.Context, pc *playbackClient, id string, q url.Values, want *recorder.BlobInfo, path string) (*os.File, error) {
	var f *os.File
	var err error
	if path == "" {
		f, err = os.CreateTemp("", "sshward-export-*.blob")
	} else {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot write the blob: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		if path == "" {
			os.Remove(f.Name())
		}
		return nil, err
	}
	resp, err := pc.do(ctx, "/api/sessions/"+url.PathEscape(id)+"/blob", q, "application/octet-stream")
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Sshward-Integrity") == integrityFailed {
		fmt.Fprintf(e.stderr, "sshward: WARNING: recording %s fails its integrity check; the exported blob may have been tampered with\n", id)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
	if err != nil {
		return fail(fmt.Errorf("export of the blob of %s stopped part way (%v): run it again", id, err))
	}
	if q.Get("allow_tampered") == "" && (n != want.Bytes || hex.EncodeToString(h.Sum(nil)) != want.SHA256) {
		return fail(fmt.Errorf("the blob of %s arrived with %d bytes that do not match its signed digest: run the export again", id, n))
	}
	return f, nil
}
