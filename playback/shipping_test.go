package playback_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// writeOutput records n lines of output, advancing the clock between them.
func writeOutput(t testing.TB, a *agent, rec *recorder.Recording, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := rec.Output([]byte(fmt.Sprintf("output line %06d %s\r\n", i, strings.Repeat("x", 60)))); err != nil {
			t.Fatal(err)
		}
		a.clock.advance(7 * time.Millisecond)
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
}

func statusOf(a *agent, id string) (recorder.ShipStatus, bool) {
	for _, s := range a.shipper.Status() {
		if s.SessionID == id {
			return s, true
		}
	}
	return recorder.ShipStatus{}, false
}

func (w *world) detail(t testing.TB, url, id string) playback.SessionDetail {
	t.Helper()
	var d playback.SessionDetail
	w.getJSON(t, url+"/api/sessions/"+id, w.auditor, &d)
	return d
}

func TestPlaybackDownForAWholeSession(t *testing.T) {
	w := newWorld(t)
	addr := freeAddr(t)
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, "https://"+addr, agentOpts{})
	rec := a.create(t, "s-down", "staging", false)
	writeOutput(t, a, rec, 0, 300)
	closeRec(t, rec)
	spoolCopy := readFile(t, filepath.Join(a.spool.Dir(), "s-down.cast"))

	waitFor(t, "the failure to show in Status", 10*time.Second, func() bool {
		st, ok := statusOf(a, "s-down")
		return ok && st.Attempts >= 2 && st.LastError != "" && st.Pending == int64(len(spoolCopy)) && st.Shipped == 0
	})

	srv := w.startServer(t, serverOpts{addr: addr})
	got := w.shipped(t, a, srv.url, "s-down")
	if !bytes.Equal(got, spoolCopy) {
		t.Fatalf("server holds %d bytes, spool had %d; not identical", len(got), len(spoolCopy))
	}
	d := w.detail(t, srv.url, "s-down")
	if d.Integrity != playback.IntegrityVerified || !d.SignatureOK || !d.DigestOK || !d.Complete || d.Live || d.HostCertKeyID != "host web1.staging" {
		t.Fatalf("detail %+v", d)
	}
	if len(a.shipper.Status()) != 0 {
		t.Fatalf("status after shipping: %+v", a.shipper.Status())
	}
}

// TestPlaybackKilledMidUpload kills sshward-playback with SIGKILL while a
// live recording streams to it in small chunks, writes more while it is
// down, restarts it on the same directory and address, and checks that the
// recording arrives whole: no chunk twice, none missing.
func TestPlaybackKilledMidUpload(t *testing.T) {
	w := newWorld(t)
	dir, addr := t.TempDir(), freeAddr(t)
	url := "https://" + addr
	p := w.startProc(t, dir, addr)
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, url, agentOpts{chunkBytes: 2048})
	rec := a.create(t, "s-kill", "staging", false)
	writeOutput(t, a, rec, 0, 20000) // ~1.7 MB: hundreds of fsynced chunks

	var stored int64
	waitFor(t, "part of the recording on the server", 20*time.Second, func() bool {
		st, ok := statusOf(a, "s-kill")
		stored = st.Shipped
		return ok && st.Shipped > 64<<10
	})
	p.kill(t)
	t.Logf("killed sshward-playback with %d bytes acknowledged", stored)
	writeOutput(t, a, rec, 20000, 500)
	waitFor(t, "the shipper to notice", 10*time.Second, func() bool {
		st, _ := statusOf(a, "s-kill")
		return st.LastError != ""
	})
	w.startProc(t, dir, addr)
	writeOutput(t, a, rec, 20500, 500)
	closeRec(t, rec)
	spoolCopy := readFile(t, filepath.Join(a.spool.Dir(), "s-kill.cast"))
	got := w.shipped(t, a, url, "s-kill")
	if !bytes.Equal(got, spoolCopy) {
		t.Fatalf("server holds %d bytes, spool had %d; not identical", len(got), len(spoolCopy))
	}
	checkCast(t, got)
	if d := w.detail(t, url, "s-kill"); d.Integrity != playback.IntegrityVerified {
		t.Fatalf("integrity %s", d.Integrity)
	}
	var audit struct {
		Verified bool `json:"verified"`
	}
	w.getJSON(t, url+"/api/audit", w.auditor, &audit)
	if !audit.Verified {
		t.Fatal("audit chain does not verify after the crash")
	}
}

// TestAgentStoppedWithUploadsPending stops the agent (shipper and spool)
// with a finished recording never shipped and a live one half shipped; the
// restarted agent ships both.
func TestAgentStoppedWithUploadsPending(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	spoolDir := filepath.Join(t.TempDir(), "spool")
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)

	// First agent: its shipper points at a server that is not there.
	a := w.startAgent(t, h, "https://"+freeAddr(t), agentOpts{spoolDir: spoolDir})
	done := a.create(t, "s-pending", "staging", false)
	writeOutput(t, a, done, 0, 100)
	closeRec(t, done)
	waitFor(t, "a failed attempt", 10*time.Second, func() bool { st, _ := statusOf(a, "s-pending"); return st.Attempts > 0 })
	a.stop()
	// Copy the finished recording now: the second agent may ship it and drop
	// it from the spool before it is stopped.
	copies := map[string][]byte{"s-pending": readFile(t, filepath.Join(spoolDir, "s-pending.cast"))}

	// Second agent: ships to the server, is stopped mid-session.
	a = w.startAgent(t, h, srv.url, agentOpts{spoolDir: spoolDir, chunkBytes: 1024})
	live := a.create(t, "s-live", "staging", false)
	writeOutput(t, a, live, 0, 200)
	waitFor(t, "part of the live session shipped", 10*time.Second, func() bool {
		st, ok := statusOf(a, "s-live")
		return ok && st.Shipped > 0
	})
	a.stop() // the spool ends s-live as incomplete

	copies["s-live"] = readFile(t, filepath.Join(spoolDir, "s-live.cast"))
	a = w.startAgent(t, h, srv.url, agentOpts{spoolDir: spoolDir})
	for id, want := range copies {
		if got := w.shipped(t, a, srv.url, id); !bytes.Equal(got, want) {
			t.Errorf("%s: server holds %d bytes, spool had %d", id, len(got), len(want))
		}
	}
	if d := w.detail(t, srv.url, "s-live"); d.Complete || !strings.Contains(d.Metadata.Incomplete, "spool closed") || d.Integrity != playback.IntegrityVerified {
		t.Errorf("s-live detail: complete=%v incomplete=%q integrity=%s", d.Complete, d.Metadata.Incomplete, d.Integrity)
	}
}

// corrupter damages the first chunk a shipper sends. "transit": the body
// no longer matches its digest header (a damaged chunk); "source": header
// and body agree (the bytes were damaged before hashing), which only the
// digest check at finish can find. Either way the request is signed anew,
// so that it passes host authentication and reaches the digest checks.
type corrupter struct {
	base http.RoundTripper
	h    *host
	mode string

	mu       sync.Mutex // guards the fields below
	done     bool
	statuses []string // "chunk 422", "finish 200", …
}

func (c *corrupter) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	hit := !c.done && req.Method == http.MethodPut && strings.HasSuffix(req.URL.Path, "/chunk")
	if hit {
		c.done = true
	}
	c.mu.Unlock()
	if hit {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		bad := bytes.Clone(body)
		i := bytes.Index(bad, []byte("output line")) + 2
		bad[i] ^= 0x20
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
		c.statuses = append(c.statuses, fmt.Sprintf("%s %d", req.URL.Path[strings.LastIndexByte(req.URL.Path, '/')+1:], resp.StatusCode))
		c.mu.Unlock()
	}
	return resp, err
}

func TestCorruptedChunkIsRejectedAndSentAgain(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	tc, err := tlsca.ClientConfigFromPEM(w.ca.RootPEM)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		mode string
		want string // the answer the damage must get
	}{
		{"transit", "chunk 422"}, // the chunk is refused and sent again
		{"source", "finish 422"}, // the server discards and the host ships again
	}
	for _, tc2 := range tests {
		t.Run(tc2.mode, func(t *testing.T) {
			h := newHost(t, "web-"+tc2.mode, w.ca.HostCA, ssh.HostCert)
			c := &corrupter{base: &http.Transport{TLSClientConfig: tc}, h: h, mode: tc2.mode}
			a := w.startAgent(t, h, srv.url, agentOpts{client: &http.Client{Transport: c}, chunkBytes: 4096})
			id := "s-corrupt-" + tc2.mode
			rec := a.create(t, id, "staging", false)
			writeOutput(t, a, rec, 0, 200)
			closeRec(t, rec)
			want := readFile(t, filepath.Join(a.spool.Dir(), id+".cast"))
			got := w.shipped(t, a, srv.url, id)
			if !bytes.Equal(got, want) {
				t.Fatalf("server holds %d bytes, spool had %d", len(got), len(want))
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if !contains(c.statuses, tc2.want) || c.statuses[len(c.statuses)-1] != "finish 200" {
				t.Fatalf("answers %v: want %q and a final finish 200", c.statuses, tc2.want)
			}
		})
	}
	var audit struct {
		Events []struct {
			Type    string `json:"type"`
			Subject string `json:"subject"`
		} `json:"events"`
	}
	w.getJSON(t, srv.url+"/api/audit?type=recording.discard", w.auditor, &audit)
	if len(audit.Events) != 1 || audit.Events[0].Subject != "s-corrupt-source" {
		t.Fatalf("discard audit events %+v", audit.Events)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestLiveFollow watches a session while it is recorded: the cast endpoint
// with follow=1 delivers lines as they are shipped and ends when the
// recording finishes; views and exports are audited with who watched.
func TestLiveFollow(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, srv.url, agentOpts{})
	rec := a.create(t, "s-follow", "staging", false)
	writeOutput(t, a, rec, 0, 5)
	waitFor(t, "the session on the server", 10*time.Second, func() bool {
		st, ok := statusOf(a, "s-follow")
		return ok && st.Shipped > 0
	})
	req, _ := http.NewRequest(http.MethodGet, srv.url+"/api/sessions/s-follow/cast?follow=1", nil)
	req.Header.Set("Authorization", "Bearer "+w.auditor)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := w.httpClient(t).Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-asciicast" {
		t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 100)
	errc := make(chan error, 1)
	var all bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			all.Write(buf[:n])
			for _, l := range strings.SplitAfter(string(buf[:n]), "\n") {
				if strings.Contains(l, "output line 000007") {
					lines <- l
				}
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	writeOutput(t, a, rec, 5, 5) // lines 5..9 while the reader follows
	select {
	case <-lines:
	case <-time.After(10 * time.Second):
		t.Fatal("a line written after the reader started did not arrive")
	}
	closeRec(t, rec)
	select {
	case err := <-errc:
		if err != io.EOF {
			t.Fatalf("follow ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end when the recording finished")
	}
	spoolCopy := w.shipped(t, a, srv.url, "s-follow")
	if !bytes.Equal(all.Bytes(), spoolCopy) {
		t.Fatalf("followed %d bytes, recording has %d", all.Len(), len(spoolCopy))
	}

	status, body := w.get(t, srv.url+"/api/sessions/s-follow/export", w.auditor)
	if status != http.StatusOK || !bytes.Equal(body, spoolCopy) {
		t.Fatalf("export: %d, %d bytes", status, len(body))
	}
	var audit struct {
		Events []struct {
			Type    string            `json:"type"`
			Actor   string            `json:"actor"`
			Subject string            `json:"subject"`
			Details map[string]string `json:"details"`
		} `json:"events"`
		Verified bool `json:"verified"`
	}
	w.getJSON(t, srv.url+"/api/audit?subject=s-follow", w.auditor, &audit)
	var got []string
	for _, e := range audit.Events {
		got = append(got, e.Type+" "+e.Actor+" follow="+e.Details["follow"])
	}
	if !audit.Verified || !contains(got, "view audrey follow=true") || !contains(got, "export audrey follow=false") {
		t.Fatalf("audit %v verified=%v", got, audit.Verified)
	}
	raw, _ := json.Marshal(audit)
	if strings.Contains(string(raw), w.auditor) {
		t.Fatal("the audit log holds a session token")
	}
}

// TestSpoolFullRecordingShipsOnceThereIsRoom: the agent's disk fills in
// the middle of a session (every write fails with ENOSPC, the metadata's
// too, even past the reserve). The recording streams live up to the last
// line written; it stays live while the disk is full; once there is room
// again it finishes by itself, with the true reason in its metadata, ships
// and is verified by the playback server. No restart of anything.
func TestSpoolFullRecordingShipsOnceThereIsRoom(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	var disk recordertest.DiskFull
	a := w.startAgent(t, h, srv.url, agentOpts{openFile: disk.OpenFile})
	rec := a.create(t, "s-full", "staging", false)
	writeOutput(t, a, rec, 0, 50)
	waitFor(t, "the live recording to stream", 10*time.Second, func() bool {
		var d playback.SessionDetail
		status, body := w.get(t, srv.url+"/api/sessions/s-full", w.auditor)
		return status == http.StatusOK && json.Unmarshal(body, &d) == nil && d.Live && d.Bytes > 50*60
	})
	disk.SetFull(true)
	if err := rec.Output([]byte("lost to the full disk\r\n")); err == nil {
		err = rec.Flush()
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write on a full disk: %v", err)
		}
	}
	status := 0
	if _, err := rec.Close(context.Background(), recorder.EndInfo{ExitStatus: &status}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close on a full disk: %v, want ENOSPC", err)
	}
	time.Sleep(200 * time.Millisecond) // shipper turns while the disk is full
	if d := w.detail(t, srv.url, "s-full"); !d.Live {
		t.Fatalf("listed finished while its metadata could not be written: %+v", d.SessionSummary)
	}

	disk.SetFull(false)
	waitFor(t, "the recording to ship once the disk has room", 15*time.Second, func() bool {
		return !w.detail(t, srv.url, "s-full").Live
	})
	d := w.detail(t, srv.url, "s-full")
	if d.Complete || !strings.Contains(d.Metadata.Incomplete, "no space left on device") || d.Integrity != playback.IntegrityVerified {
		t.Fatalf("shipped: complete=%v incomplete=%q integrity=%s, want incomplete for the full disk and verified",
			d.Complete, d.Metadata.Incomplete, d.Integrity)
	}
	got := w.shipped(t, a, srv.url, "s-full")
	if !strings.Contains(string(got), "output line 000049") || strings.Contains(string(got), "lost to the full disk") {
		t.Errorf("shipped cast lacks its last written line or holds the unwritten one")
	}
}

// TestShipperFailsOverToAnotherServer: the playback server receiving a
// live recording goes away in the middle of it; the agent moves to the
// next server it knows (ShipperConfig.Fallbacks), ships the recording
// there from the start, and the auditor finds it whole and verified on
// that server: no gap, no duplicate.
func TestShipperFailsOverToAnotherServer(t *testing.T) {
	w := newWorld(t)
	first, second := w.startServer(t, serverOpts{}), w.startServer(t, serverOpts{})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, first.url, agentOpts{fallbacks: []string{second.url}})
	rec := a.create(t, "s-failover", "staging", false)
	writeOutput(t, a, rec, 0, 100)
	waitFor(t, "the live recording to stream to the first server", 10*time.Second, func() bool {
		var d playback.SessionDetail
		status, body := w.get(t, first.url+"/api/sessions/s-failover", w.auditor)
		return status == http.StatusOK && json.Unmarshal(body, &d) == nil && d.Live && d.Bytes > 100*60
	})
	first.stop()
	writeOutput(t, a, rec, 100, 100)
	closeRec(t, rec)
	spoolCopy := readFile(t, filepath.Join(a.spool.Dir(), "s-failover.cast"))
	got := w.shipped(t, a, second.url, "s-failover")
	if !bytes.Equal(got, spoolCopy) {
		t.Fatalf("the second server holds %d bytes, the spool %d: not the same recording", len(got), len(spoolCopy))
	}
	d := w.detail(t, second.url, "s-failover")
	if d.Integrity != playback.IntegrityVerified || !d.Complete || d.Live {
		t.Fatalf("on the second server: %+v", d.SessionSummary)
	}
	if n := strings.Count(string(got), "output line 000150"); n != 1 {
		t.Errorf("line 150 appears %d times", n)
	}
}
