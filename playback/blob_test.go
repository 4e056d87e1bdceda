package playback_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/objstore/s3test"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// createExec starts a recording of a session without a terminal (as the
// agent records `ssh host cmd`).
func (a *agent) createExec(t testing.TB, id, tier string, keep int64) *recorder.Recording {
	t.Helper()
	rec, err := a.spool.Create(context.Background(), recorder.Metadata{
		SessionID: id, Identity: "bob", Principal: "root", KeyID: "bob@local tier=" + tier, Serial: 7, Tier: tier,
		Host: a.hostName, ClientAddr: "192.0.2.1", Kind: recorder.KindExec, Command: "cat random.bin",
		OutputNewlines: recorder.NewlinesCRLF, BulkKeepBytes: keep,
	}, recorder.Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// binarySession records text, then size bytes of random binary output in
// 32 KiB reads, then text, and returns every byte sent.
func binarySession(t testing.TB, a *agent, rec *recorder.Recording, size int) []byte {
	t.Helper()
	bin := make([]byte, size)
	if _, err := rand.Read(bin); err != nil {
		t.Fatal(err)
	}
	var sent []byte
	out := func(p []byte) {
		if err := rec.Output(p); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, p...)
	}
	out([]byte("$ cat random.bin\n"))
	for p := bin; len(p) > 0; p = p[min(len(p), 32<<10):] {
		out(p[:min(len(p), 32<<10)])
		a.clock.advance(time.Millisecond)
	}
	out([]byte("\ndone\n"))
	return sent
}

// exportBytes fetches cast and blob as an auditor and puts the exact output
// back together.
func (w *world) exportBytes(t testing.TB, url, id string) []byte {
	t.Helper()
	d := w.detail(t, url, id)
	status, cast := w.get(t, url+"/api/sessions/"+id+"/export", w.auditor)
	if status != http.StatusOK {
		t.Fatalf("export %s: %d %s", id, status, cast)
	}
	status, blob := w.get(t, url+"/api/sessions/"+id+"/blob", w.auditor)
	if status != http.StatusOK {
		t.Fatalf("blob %s: %d %s", id, status, blob)
	}
	var out bytes.Buffer
	if _, err := recorder.ExactOutputBytes(d.Metadata, bytes.NewReader(cast), bytes.NewReader(blob), &out); err != nil {
		t.Fatalf("exact output of %s: %v", id, err)
	}
	return out.Bytes()
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestBlobShippedVerifiedAndTamperRefused: binary output reaches the
// playback server losslessly (cast and blob put back together equal every
// byte sent), the blob's digest is checked wherever the recording is shown,
// and an attacker with write access to the playback disk who edits a byte
// of the blob (size and mtime kept) or cuts it short makes the recording
// fail exactly as an edited cast does: list, detail, export and blob
// refuse or say so, and the audit chain records it.
func TestBlobShippedVerifiedAndTamperRefused(t *testing.T) {
	w := newWorld(t)
	w.plaintextOnly(t)
	srv := w.startServer(t, serverOpts{})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, srv.url, agentOpts{chunkBytes: 256 << 10})
	rec := a.createExec(t, "s-blob", "staging", 0)
	sent := binarySession(t, a, rec, 3<<20)
	m := closeRec(t, rec)
	if m.Blob == nil || m.Blob.Bytes < 3<<20-100 {
		t.Fatalf("metadata blob %+v", m.Blob)
	}
	w.shipped(t, a, srv.url, "s-blob")
	d := w.detail(t, srv.url, "s-blob")
	if d.Integrity != playback.IntegrityVerified || !d.DigestOK || d.Metadata.Blob == nil || *d.Metadata.Blob != *m.Blob {
		t.Fatalf("detail: integrity %s digest_ok %v blob %+v, want %+v", d.Integrity, d.DigestOK, d.Metadata.Blob, m.Blob)
	}
	if got := w.exportBytes(t, srv.url, "s-blob"); hexSum(got) != hexSum(sent) {
		t.Fatalf("exported %d bytes (sha256 %s), the session sent %d (%s)", len(got), hexSum(got), len(sent), hexSum(sent))
	}
	// Blob references are format, not events: the marker list (the web
	// page's, the index's) shows the session's own markers only.
	waitFor(t, "the markers indexed", 10*time.Second, func() bool {
		for _, mk := range w.detail(t, srv.url, "s-blob").Markers {
			if strings.HasPrefix(mk.Label, "session end") {
				return true
			}
		}
		return false
	})
	for _, mk := range w.detail(t, srv.url, "s-blob").Markers {
		if strings.HasPrefix(mk.Label, recorder.BlobLabelPrefix) {
			t.Errorf("a blob reference is listed as a marker: %q", mk.Label)
		}
	}
	ratio := float64(d.Metadata.CastBytes+d.Metadata.Blob.Bytes) / float64(len(sent))
	t.Logf("stored on the playback server: cast %d + blob %d for %d bytes sent: %.4f bytes per byte", d.Metadata.CastBytes, d.Metadata.Blob.Bytes, len(sent), ratio)
	if ratio > 1.1 {
		t.Errorf("%.3f stored bytes per byte, want <= 1.1", ratio)
	}

	matches, _ := filepath.Glob(filepath.Join(srv.dir, "*", "s-blob.blob"))
	if len(matches) != 1 {
		t.Fatalf("blob file: %v", matches)
	}
	blobFile := matches[0]
	orig := readFile(t, blobFile)
	fi, _ := os.Stat(blobFile)

	refused := func(what string) {
		t.Helper()
		var out struct {
			Sessions []playback.SessionSummary `json:"sessions"`
		}
		w.getJSON(t, srv.url+"/api/sessions", w.auditor, &out)
		if len(out.Sessions) != 1 || out.Sessions[0].Integrity != playback.IntegrityFailed {
			t.Errorf("%s: list says %+v", what, out.Sessions)
		}
		if d := w.detail(t, srv.url, "s-blob"); d.Integrity != playback.IntegrityFailed || d.DigestOK || !d.SignatureOK {
			t.Errorf("%s: detail integrity %q digest_ok %v signature_ok %v", what, d.Integrity, d.DigestOK, d.SignatureOK)
		}
		for _, path := range []string{"/export", "/blob"} {
			status, body := w.get(t, srv.url+"/api/sessions/s-blob"+path, w.auditor)
			var e struct{ Code, Message string }
			json.Unmarshal(body, &e)
			if status != http.StatusConflict || e.Code != playback.CodeIntegrityFailed {
				t.Errorf("%s: %s answered %d %s", what, path, status, body[:min(len(body), 200)])
			}
		}
	}

	// One byte edited, same size, modification time put back.
	edited := bytes.Clone(orig)
	edited[len(edited)/2] ^= 0x01
	if err := os.WriteFile(blobFile, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(blobFile, fi.ModTime(), fi.ModTime())
	refused("one byte of the blob edited")
	status, body := w.get(t, srv.url+"/api/sessions/s-blob/blob?allow_tampered=1", w.auditor)
	if status != http.StatusOK || !bytes.Equal(body, edited) {
		t.Errorf("blob with allow_tampered: %d, %d bytes", status, len(body))
	}

	// Cut short by one byte.
	if err := os.WriteFile(blobFile, orig[:len(orig)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	refused("the blob cut short")

	// Gone.
	if err := os.Remove(blobFile); err != nil {
		t.Fatal(err)
	}
	refused("the blob removed")

	var audit struct {
		Events []struct{ Type, Subject, Outcome, Reason string } `json:"events"`
	}
	w.getJSON(t, srv.url+"/api/audit", w.auditor, &audit)
	var failed int
	for _, ev := range audit.Events {
		if ev.Type == "recording.integrity_failed" && ev.Subject == "s-blob" && strings.Contains(ev.Reason, "side blob") {
			failed++
		}
	}
	if failed < 3 {
		t.Errorf("audit: %d integrity_failed events naming the blob, want one per tampered state (3)", failed)
	}

	// The original bytes back: verified again.
	if err := os.WriteFile(blobFile, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if d := w.detail(t, srv.url, "s-blob"); d.Integrity != playback.IntegrityVerified {
		t.Errorf("after restoring the blob: %s", d.Integrity)
	}
}

// TestBlobResumesAcrossPlaybackKill: sshward-playback is killed with -9
// while a blob is half uploaded and started again; the shipper resumes at
// the offset the server holds and the result has no gap and no duplicate
// (the exact output equals what was sent, the server's finish checked the
// signed digest).
func TestBlobResumesAcrossPlaybackKill(t *testing.T) {
	w := newWorld(t)
	dir, addr := t.TempDir(), freeAddr(t)
	url := "https://" + addr
	p := w.startProc(t, dir, addr)
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, url, agentOpts{chunkBytes: 16 << 10})
	rec := a.createExec(t, "s-resume", "staging", 0)
	sent := binarySession(t, a, rec, 4<<20)
	closeRec(t, rec)
	var part int64
	waitFor(t, "part of the blob on the server", 30*time.Second, func() bool {
		matches, _ := filepath.Glob(filepath.Join(dir, "*", "s-resume.blob"))
		if len(matches) != 1 {
			return false
		}
		fi, err := os.Stat(matches[0])
		part = fi.Size()
		return err == nil && part > 256<<10
	})
	p.kill(t)
	t.Logf("killed sshward-playback with %d of %d blob bytes on its disk", part, len(sent))
	if part >= int64(len(sent))-(64<<10) {
		t.Fatal("the blob was all there before the kill: the test would not test resuming")
	}
	w.startProc(t, dir, addr)
	w.shipped(t, a, url, "s-resume")
	if d := w.detail(t, url, "s-resume"); d.Integrity != playback.IntegrityVerified {
		t.Fatalf("integrity %s", d.Integrity)
	}
	if got := w.exportBytes(t, url, "s-resume"); hexSum(got) != hexSum(sent) {
		t.Fatalf("exported %d bytes, the session sent %d: not identical", len(got), len(sent))
	}
}

// TestBlobArchivedAndReindexed: the side blob reaches the object store
// beside the cast, a replica rebuilt from the bucket alone serves the same
// exact output, and a blob object edited in the bucket makes Reindex
// refuse the recording (its digest is signed) instead of importing it.
func TestBlobArchivedAndReindexed(t *testing.T) {
	s3 := s3test.Start(t)
	bucket := openBucket(t, s3)
	w := newWorld(t)
	w.plaintextOnly(t)
	srv := w.startServer(t, serverOpts{objects: bucket})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, srv.url, agentOpts{})
	rec := a.createExec(t, "s-arch-blob", "staging", 0)
	sent := binarySession(t, a, rec, 1<<20)
	m := closeRec(t, rec)
	w.shipped(t, a, srv.url, "s-arch-blob")
	waitFor(t, "the recording in the bucket", 15*time.Second, func() bool {
		_, err := objectBytes(t, bucket, "records/s-arch-blob.json")
		return err == nil
	})
	blob, err := objectBytes(t, bucket, "sideblobs/s-arch-blob.blob")
	if err != nil || int64(len(blob)) != m.Blob.Bytes || hexSum(blob) != m.Blob.SHA256 {
		t.Fatalf("archived blob: %d bytes (%v), want %d with sha256 %s", len(blob), err, m.Blob.Bytes, m.Blob.SHA256)
	}

	fresh, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if res, err := playback.Reindex(context.Background(), fresh, bucket, nil); err != nil || res.Imported != 1 {
		t.Fatalf("Reindex: %+v %v", res, err)
	}
	r, err := fresh.Get(context.Background(), "s-arch-blob")
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := fresh.OpenCast("s-arch-blob")
	bf, err := fresh.OpenBlob("s-arch-blob")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err = recorder.ExactOutputBytes(r.Meta, cf, bf, &out)
	cf.Close()
	bf.Close()
	if err != nil || hexSum(out.Bytes()) != hexSum(sent) {
		t.Fatalf("exact output from the rebuilt replica: %d bytes, %v; want the %d sent", out.Len(), err, len(sent))
	}

	// The blob object edited in the bucket: a second fresh replica refuses it.
	blob[10] ^= 0xff
	if err := bucket.Put(context.Background(), "sideblobs/s-arch-blob.blob", bytes.NewReader(blob), int64(len(blob))); err != nil {
		t.Fatal(err)
	}
	fresh2, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh2.Close()
	if res, err := playback.Reindex(context.Background(), fresh2, bucket, nil); err != nil || res.Refused != 1 || res.Imported != 0 {
		t.Fatalf("Reindex of an edited blob: %+v %v; want it refused", res, err)
	}
	if _, err := fresh2.Get(context.Background(), "s-arch-blob"); err == nil {
		t.Error("a recording with an edited blob was imported")
	}
}

// TestBlobPendingIsShown: while the playback server is away, the upload
// queue counts the side blob's bytes as pending with the cast's (nothing
// silently pending), and all of it arrives once the server is there.
func TestBlobPendingIsShown(t *testing.T) {
	w := newWorld(t)
	addr := freeAddr(t)
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, "https://"+addr, agentOpts{})
	rec := a.createExec(t, "s-pending", "staging", 0)
	sent := binarySession(t, a, rec, 1<<20)
	m := closeRec(t, rec)
	waitFor(t, "the queue to show cast and blob pending", 10*time.Second, func() bool {
		st, ok := statusOf(a, "s-pending")
		return ok && st.LastError != "" && st.Pending == m.CastBytes+m.Blob.Bytes
	})
	srv := w.startServer(t, serverOpts{addr: addr})
	w.shipped(t, a, srv.url, "s-pending")
	if got := w.exportBytes(t, srv.url, "s-pending"); hexSum(got) != hexSum(sent) {
		t.Fatalf("exported %d bytes, the session sent %d: not identical", len(got), len(sent))
	}
}

// blobCorrupter flips a byte of the first blob chunk a host sends: in
// transit (its digest header no longer matches) or at the source (the
// header made to match, so that only the finish's check of the signed
// blob digest can find it). The request is signed anew either way.
type blobCorrupter struct {
	base http.RoundTripper
	h    *host
	mode string

	mu       sync.Mutex // guards the fields below
	done     bool
	statuses []string
}

func (c *blobCorrupter) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	hit := !c.done && req.Method == http.MethodPut && strings.HasSuffix(req.URL.Path, "/blob")
	c.done = c.done || hit
	c.mu.Unlock()
	if hit {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		bad := bytes.Clone(body)
		bad[len(bad)/2] ^= 0x01
		nr, _ := http.NewRequestWithContext(req.Context(), req.Method, req.URL.String(), bytes.NewReader(bad))
		nr.Header = req.Header.Clone()
		if c.mode == "source" {
			nr.Header.Set(recorder.ChunkDigestHeader, recorder.ChunkDigest(bad))
		}
		if err := hostauth.Sign(nr, bad, c.h.cert, c.h.signer, time.Now(), rand.Reader); err != nil {
			return nil, err
		}
		req = nr
	}
	resp, err := c.base.RoundTrip(req)
	if err == nil {
		c.mu.Lock()
		c.statuses = append(c.statuses, req.URL.Path[strings.LastIndexByte(req.URL.Path, '/')+1:]+" "+strconv.Itoa(resp.StatusCode))
		c.mu.Unlock()
	}
	return resp, err
}

// TestCorruptedBlobChunkIsNeverStored: a blob chunk damaged in transit is
// refused (422) and sent again; one damaged before its digest was taken
// passes the chunk check but not the finish (the blob's sha256 is signed):
// the server discards cast and blob and the host ships both again. Either
// way the stored recording puts back exactly the bytes the session sent.
func TestCorruptedBlobChunkIsNeverStored(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	tlsc, err := tlsca.ClientConfigFromPEM(w.ca.RootPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ mode, want string }{{"transit", "blob 422"}, {"source", "finish 422"}} {
		t.Run(tc.mode, func(t *testing.T) {
			h := newHost(t, "web-"+tc.mode, w.ca.HostCA, ssh.HostCert)
			c := &blobCorrupter{base: &http.Transport{TLSClientConfig: tlsc}, h: h, mode: tc.mode}
			a := w.startAgent(t, h, srv.url, agentOpts{client: &http.Client{Transport: c}, chunkBytes: 64 << 10})
			id := "s-blob-corrupt-" + tc.mode
			rec := a.createExec(t, id, "staging", 0)
			sent := binarySession(t, a, rec, 512<<10)
			closeRec(t, rec)
			w.shipped(t, a, srv.url, id)
			if got := w.exportBytes(t, srv.url, id); hexSum(got) != hexSum(sent) {
				t.Fatalf("exported %d bytes, the session sent %d: not identical", len(got), len(sent))
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if !contains(c.statuses, tc.want) || c.statuses[len(c.statuses)-1] != "finish 200" {
				t.Fatalf("answers %v: want %q and a final finish 200", c.statuses, tc.want)
			}
		})
	}
}
