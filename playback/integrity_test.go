package playback_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback"
)

// TestTamperedRecordingFailsEverywhere is the attacker with write access to
// the playback disk: one stored byte of a finished recording is changed and
// the file's modification time put back (`touch -r`). The list, the detail,
// the cast served to players and the export must all say so; export refuses
// unless the tampered bytes are asked for by name; the audit chain records
// the failed check.
func TestTamperedRecordingFailsEverywhere(t *testing.T) {
	w := newWorld(t)
	w.plaintextOnly(t)
	srv := w.startServer(t, serverOpts{})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, srv.url, agentOpts{})
	rec := a.create(t, "s-tamper", "staging", false)
	writeOutput(t, a, rec, 0, 50)
	closeRec(t, rec)
	orig := w.shipped(t, a, srv.url, "s-tamper")

	listed := func() string {
		var out struct {
			Sessions []playback.SessionSummary `json:"sessions"`
		}
		w.getJSON(t, srv.url+"/api/sessions", w.auditor, &out)
		for _, s := range out.Sessions {
			if s.ID == "s-tamper" {
				return s.Integrity
			}
		}
		t.Fatal("s-tamper not listed")
		return ""
	}
	if got := listed(); got != playback.IntegrityVerified {
		t.Fatalf("before the edit the list says %q", got)
	}

	// The attack: flip one byte of output text, same length, same mtime.
	matches, _ := filepath.Glob(filepath.Join(srv.dir, "*", "s-tamper.cast"))
	if len(matches) != 1 {
		t.Fatalf("cast file: %v", matches)
	}
	castFile := matches[0]
	fi, err := os.Stat(castFile)
	if err != nil {
		t.Fatal(err)
	}
	data := readFile(t, castFile)
	i := bytes.Index(data, []byte("line 000007"))
	if i < 0 {
		t.Fatalf("no output line in %q", data)
	}
	data[i] = 'L'
	if err := os.WriteFile(castFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(castFile, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(castFile); fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatal("the edit changed size or mtime: the test would not model touch -r")
	}

	if got := listed(); got != playback.IntegrityFailed {
		t.Errorf("list after the edit says %q, want %q", got, playback.IntegrityFailed)
	}
	d := w.detail(t, srv.url, "s-tamper")
	if d.Integrity != playback.IntegrityFailed || d.DigestOK || !d.SignatureOK {
		t.Errorf("detail: integrity %q digest_ok %v signature_ok %v", d.Integrity, d.DigestOK, d.SignatureOK)
	}

	get := func(path string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, srv.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+w.auditor)
		resp, err := w.httpClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp, b.Bytes()
	}
	resp, _ := get("/api/sessions/s-tamper/cast")
	if resp.Header.Get(playback.HeaderIntegrity) != playback.IntegrityFailed {
		t.Errorf("cast served with integrity header %q", resp.Header.Get(playback.HeaderIntegrity))
	}
	resp, body := get("/api/sessions/s-tamper/export")
	var apiErr struct {
		Code, Message string
	}
	json.Unmarshal(body, &apiErr)
	if resp.StatusCode != http.StatusConflict || apiErr.Code != playback.CodeIntegrityFailed || !strings.Contains(apiErr.Message, "fails its integrity check") {
		t.Errorf("export of a tampered recording: %d %s", resp.StatusCode, body)
	}
	resp, body = get("/api/sessions/s-tamper/export?allow_tampered=1")
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) || bytes.Equal(body, orig) {
		t.Errorf("export with allow_tampered: %d, %d bytes (tampered %v)", resp.StatusCode, len(body), bytes.Equal(body, data))
	}

	var audit struct {
		Events []struct {
			Type, Subject, Outcome, Reason string
		} `json:"events"`
	}
	w.getJSON(t, srv.url+"/api/audit", w.auditor, &audit)
	var failed, refused int
	for _, ev := range audit.Events {
		switch {
		case ev.Type == "recording.integrity_failed" && ev.Subject == "s-tamper":
			failed++
		case ev.Type == "export" && ev.Subject == "s-tamper" && ev.Outcome == "refused":
			refused++
		}
	}
	if failed != 1 || refused != 1 {
		t.Errorf("audit: %d integrity_failed (want 1: once per state of the file), %d refused exports (want 1)", failed, refused)
	}

	// Putting the original bytes back verifies again: the check follows the
	// content, not a sticky flag.
	if err := os.WriteFile(castFile, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := listed(); got != playback.IntegrityVerified {
		t.Errorf("list after restoring the bytes says %q", got)
	}
}
