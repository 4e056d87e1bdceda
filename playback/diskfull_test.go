package playback_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/playback/store/storetest"
	"github.com/sshward/sshward/recorder"
)

// TestIngestRecoversAfterDiskFull: the playback server's disk fills (a
// real tmpfs) while a host ships a recording. The chunk is refused with
// 507 and a message that says what to do, nothing half-written stays, and
// once space is freed the same host's retries store, finish and index the
// recording without a restart: it is listed finished with all its bytes
// and its text is found.
func TestIngestRecoversAfterDiskFull(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m,mode=0700"); err != nil {
		t.Skipf("a full disk needs a small tmpfs, and mount(2) is not allowed here (%v): run as root", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	srv := w.startServer(t, serverOpts{dir: dir})
	h := newHost(t, "web1", w.ca.HostCA, ssh.HostCert)
	in := &ingester{base: srv.url, hc: w.httpClient(t), h: h}
	ctx := context.Background()

	data := storetest.ShellCast(3, 300_000, true)
	data = append(data, []byte(`[9999.5, "o", "diskfull-marker-word\r\n"]`+"\n")...)
	id := "full-disk-1"
	m := recorder.Metadata{SessionID: id, Identity: "bob", Principal: "root", Tier: "production", Host: "web1", Kind: recorder.KindShell,
		Start: time.Now(), Complete: true, Finished: true}
	mj, _ := json.Marshal(m)
	if _, err := in.do(ctx, http.MethodPost, recorder.IngestPath(id, recorder.IngestStart), mj, map[string]string{"Content-Type": "application/json"}); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for buf := make([]byte, 64<<10); ; {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	put := func() error {
		path := recorder.IngestPath(id, recorder.IngestChunk) + "?offset=0"
		_, err := in.do(ctx, http.MethodPut, path, data, map[string]string{recorder.ChunkDigestHeader: recorder.ChunkDigest(data)})
		return err
	}
	err = put()
	if err == nil || !strings.Contains(err.Error(), "507") || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("chunk on a full disk: %v, want 507 saying the disk is full", err)
	}
	if rec, err := srv.store.Get(ctx, id); err != nil || rec.Stored != 0 || rec.Finished {
		t.Fatalf("after the refused chunk: %+v %v", rec, err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := put(); err != nil {
		t.Fatalf("chunk once space is back: %v", err)
	}
	sum := sha256.Sum256(data)
	m.SHA256, m.CastBytes = hex.EncodeToString(sum[:]), int64(len(data))
	sig, err := recorder.SignRecording(h.signer, rand.Reader, m)
	if err != nil {
		t.Fatal(err)
	}
	fj, _ := json.Marshal(recorder.IngestFinishRequest{Metadata: m, Signature: sig})
	if _, err := in.do(ctx, http.MethodPost, recorder.IngestPath(id, recorder.IngestFinish), fj, map[string]string{"Content-Type": "application/json"}); err != nil {
		t.Fatalf("finish once space is back: %v", err)
	}
	var list struct {
		Sessions []struct {
			ID    string `json:"id"`
			Live  bool   `json:"live"`
			Bytes int64  `json:"bytes"`
		} `json:"sessions"`
	}
	w.getJSON(t, srv.url+"/api/sessions", w.auditor, &list)
	if len(list.Sessions) != 1 || list.Sessions[0].ID != id || list.Sessions[0].Live || list.Sessions[0].Bytes != int64(len(data)) {
		t.Fatalf("listing after recovery: %+v", list.Sessions)
	}
	waitFor(t, "the recording's text", 30*time.Second, func() bool {
		var ans struct{ Hits []store.Hit }
		w.getJSON(t, srv.url+"/api/search?q=diskfull-marker-word", w.auditor, &ans)
		return len(ans.Hits) == 1 && ans.Hits[0].SessionID == id
	})
}
