package recorder_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

func TestSpoolRecording(t *testing.T) {
	clock := newFakeClock(100 * time.Millisecond)
	dir := t.TempDir() + "/spool"
	s := recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir, Now: clock.Now})
	ctx := context.Background()

	m := testMetadata("s-1")
	m.RequestID, m.Reason, m.Approvers = "REQ-7", "INC-4711 db down", []string{"bob", "carol"}
	r, err := s.Create(ctx, m, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"$ ", "ls\r\n", "héllo wörld ✓ 日本\r\n"}
	for _, o := range out {
		if err := r.Output([]byte(o)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Input([]byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	if err := r.Resize(120, 40); err != nil {
		t.Fatal(err)
	}
	status := 3
	got, err := r.Close(ctx, recorder.EndInfo{ExitStatus: &status, Reason: "certificate expired"})
	if err != nil {
		t.Fatal(err)
	}

	castPath, metaPath := filepath.Join(dir, "s-1.cast"), filepath.Join(dir, "s-1.json")
	sum, size, err := recorder.Digest(castPath)
	if err != nil {
		t.Fatal(err)
	}
	onDisk := recordertest.MustReadMetadata(t, metaPath)
	for name, m := range map[string]recorder.Metadata{"returned": *got, "on disk": onDisk} {
		switch {
		case !m.Complete || !m.Finished || m.Incomplete != "":
			t.Errorf("%s: complete=%v finished=%v incomplete=%q", name, m.Complete, m.Finished, m.Incomplete)
		case m.SHA256 != sum || m.CastBytes != size:
			t.Errorf("%s: sha256 %s size %d, file has %s %d", name, m.SHA256, m.CastBytes, sum, size)
		case m.BytesOut != int64(len(strings.Join(out, ""))) || m.BytesIn != 3:
			t.Errorf("%s: bytes out %d in %d", name, m.BytesOut, m.BytesIn)
		case m.ExitStatus == nil || *m.ExitStatus != 3 || m.EndReason != "certificate expired":
			t.Errorf("%s: exit %v reason %q", name, m.ExitStatus, m.EndReason)
		case m.Start.IsZero() || !m.End.After(m.Start):
			t.Errorf("%s: start %v end %v", name, m.Start, m.End)
		case m.KeyID != "alice@laptop" || m.Serial != 42 || m.Approvers[1] != "carol":
			t.Errorf("%s: identity fields lost: %+v", name, m)
		}
	}

	h, evs := recordertest.MustReadCast(t, castPath)
	if h.Width != 80 || h.Env["SHELL"] != "/bin/bash" || h.Timestamp != onDisk.Start.Unix() {
		t.Errorf("header %+v", h)
	}
	wantMarkers := []string{
		`session start user=alice principal=root key_id=alice@laptop serial=42 tier=production from=192.0.2.1:50022 kind=shell request=REQ-7 reason="INC-4711 db down" approvers=bob,carol`,
		`session end status=3 reason="certificate expired"`,
	}
	if ms := recordertest.Markers(evs); fmt.Sprint(ms) != fmt.Sprint(wantMarkers) {
		t.Errorf("markers\n got %q\nwant %q", ms, wantMarkers)
	}
	if evs[0].Code != recorder.CodeMarker || evs[len(evs)-1].Code != recorder.CodeMarker {
		t.Errorf("first and last events are not the markers: %+v", evs)
	}
	if o := recordertest.Data(evs, recorder.CodeOutput); o != strings.Join(out, "") {
		t.Errorf("output %q", o)
	}
	if recordertest.Data(evs, recorder.CodeInput) != "ls\r" || recordertest.Data(evs, recorder.CodeResize) != "120x40" {
		t.Errorf("input or resize lost: %+v", evs)
	}

	for path, want := range map[string]os.FileMode{dir: 0o700, castPath: 0o600, metaPath: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	if _, err := r.Close(ctx, recorder.EndInfo{}); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if err := r.Output([]byte("late")); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("Output after Close: %v", err)
	}
}

func TestCreateRefuses(t *testing.T) {
	s := recordertest.MustSpool(t, recorder.SpoolConfig{})
	ctx := context.Background()
	if _, err := s.Create(ctx, testMetadata("taken"), testHeader); err != nil {
		t.Fatal(err)
	}
	done, err := s.Create(ctx, testMetadata("done"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := done.Close(ctx, recorder.EndInfo{}); err != nil {
		t.Fatal(err)
	}
	meta := func(id string, edit func(*recorder.Metadata)) recorder.Metadata {
		m := testMetadata(id)
		if edit != nil {
			edit(&m)
		}
		return m
	}
	for _, tc := range []struct {
		name string
		m    recorder.Metadata
		h    recorder.Header
		want error
	}{
		{"empty id", meta("", nil), testHeader, recorder.ErrInvalidSessionID},
		{"path traversal", meta("../etc/passwd", nil), testHeader, recorder.ErrInvalidSessionID},
		{"slash", meta("a/b", nil), testHeader, recorder.ErrInvalidSessionID},
		{"hidden", meta(".x", nil), testHeader, recorder.ErrInvalidSessionID},
		{"dot dot", meta("..", nil), testHeader, recorder.ErrInvalidSessionID},
		{"space", meta("a b", nil), testHeader, recorder.ErrInvalidSessionID},
		{"non-ascii", meta("sé", nil), testHeader, recorder.ErrInvalidSessionID},
		{"too long", meta(strings.Repeat("a", 129), nil), testHeader, recorder.ErrInvalidSessionID},
		{"live id", meta("taken", nil), testHeader, recorder.ErrExists},
		{"finished id", meta("done", nil), testHeader, recorder.ErrExists},
		{"unknown kind", meta("k", func(m *recorder.Metadata) { m.Kind = "x11" }), testHeader, nil},
		{"bad header", meta("h", nil), recorder.Header{Width: 0, Height: 24}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := s.Create(ctx, tc.m, tc.h)
			if err == nil {
				t.Fatalf("created %v", r.SessionID())
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Nothing was left behind by the refusals.
	names, _ := filepath.Glob(filepath.Join(s.Dir(), "*"))
	if len(names) != 6 { // .lock, .reserve and two recordings
		t.Errorf("spool holds %q", names)
	}
	if _, err := s.Create(ctx, meta("ok.1_A-b", nil), testHeader); err != nil {
		t.Errorf("valid id refused: %v", err)
	}
}

func TestSpoolLock(t *testing.T) {
	dir := t.TempDir()
	s := recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir})
	if _, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{Dir: dir}); !errors.Is(err, recorder.ErrLocked) {
		t.Fatalf("second OpenSpool: %v, want recorder.ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir})
}

func TestSpoolConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  recorder.SpoolConfig
		want string
	}{
		{"no dir", recorder.SpoolConfig{}, "Dir"},
		{"negative interval", recorder.SpoolConfig{Dir: "x", FlushInterval: -1}, "FlushInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := recorder.OpenSpool(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// The flusher writes live recordings out without any call from the session.
func TestFlushInterval(t *testing.T) {
	s := recordertest.MustSpool(t, recorder.SpoolConfig{FlushInterval: 20 * time.Millisecond})
	r, err := s.Create(context.Background(), testMetadata("f"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Output([]byte("flushed by the timer")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(r.CastPath())
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("flushed by the timer")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("output not in the file after 5 s:\n%s", data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSpoolCloseFinishesLiveRecordings(t *testing.T) {
	dir := t.TempDir()
	s := recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir})
	r, err := s.Create(context.Background(), testMetadata("live"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Output([]byte("partial\xe6")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	m := recordertest.MustReadMetadata(t, filepath.Join(dir, "live.json"))
	if m.Complete || !m.Finished || m.Incomplete != "spool closed before the session ended" {
		t.Errorf("metadata %+v", m)
	}
	if sum, _, _ := recorder.Digest(filepath.Join(dir, "live.cast")); sum != m.SHA256 {
		t.Errorf("digest %s, metadata %s", sum, m.SHA256)
	}
	_, evs := recordertest.MustReadCast(t, filepath.Join(dir, "live.cast"))
	// The rune the session never finished is kept as it was, in the blob.
	if o := recordertest.Data(evs, recorder.CodeOutput); !strings.HasPrefix(o, "partial[binary output: 1 bytes") {
		t.Errorf("output %q", o)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "live.blob")); err != nil || string(b) != "\xe6" || m.Blob == nil || m.Blob.Bytes != 1 {
		t.Errorf("blob %q (%v), metadata %+v", b, err, m.Blob)
	}
	if err := r.Output([]byte("x")); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("Output after spool Close: %v", err)
	}
	if _, err := r.Close(context.Background(), recorder.EndInfo{}); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("Close after spool Close: %v", err)
	}
	if _, err := s.Create(context.Background(), testMetadata("new"), testHeader); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("Create after spool Close: %v", err)
	}
}

func TestListAndRemove(t *testing.T) {
	clock := newFakeClock(time.Second)
	s := recordertest.MustSpool(t, recorder.SpoolConfig{Now: clock.Now})
	ctx := context.Background()
	done, err := s.Create(ctx, testMetadata("a-done"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := done.Close(ctx, recorder.EndInfo{}); err != nil {
		t.Fatal(err)
	}
	live, err := s.Create(ctx, testMetadata("b-live"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Output([]byte("12345")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "c-bad.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}

	es, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 {
		t.Fatalf("List: %+v", es)
	}
	byID := map[string]recorder.Entry{}
	for _, e := range es {
		byID[e.SessionID] = e
	}
	if e := byID["a-done"]; e.Live || !e.Finished || e.Age <= 0 || e.CastPath != filepath.Join(s.Dir(), "a-done.cast") {
		t.Errorf("finished entry %+v", e)
	}
	if e := byID["b-live"]; !e.Live || e.BytesOut != 5 || e.CastBytes == 0 {
		t.Errorf("live entry %+v", e)
	}
	if e := byID["c-bad"]; e.Problem == "" {
		t.Errorf("unreadable entry %+v", e)
	}

	for _, tc := range []struct {
		id   string
		want error
	}{
		{"b-live", recorder.ErrLive},
		{"nope", recorder.ErrNotFound},
		{"../x", recorder.ErrInvalidSessionID},
		{"a-done", nil},
		{"a-done", recorder.ErrNotFound},
	} {
		if err := s.Remove(ctx, tc.id); !errors.Is(err, tc.want) {
			t.Errorf("Remove(%s): %v, want %v", tc.id, err, tc.want)
		}
	}
	for _, p := range []string{"a-done.cast", "a-done.json"} {
		if _, err := os.Stat(filepath.Join(s.Dir(), p)); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
}

func TestInputNotRecorded(t *testing.T) {
	s := recordertest.MustSpool(t, recorder.SpoolConfig{})
	m := testMetadata("no-input")
	m.RecordInput = false
	r, err := s.Create(context.Background(), m, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Input([]byte("secret-password\r")); err != nil {
		t.Fatal(err)
	}
	got, err := r.Close(context.Background(), recorder.EndInfo{})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(r.CastPath())
	if bytes.Contains(data, []byte("secret-password")) || got.BytesIn != 0 {
		t.Errorf("input recorded against the tier's rule (bytes_in %d):\n%s", got.BytesIn, data)
	}
}

// Many recordings written and closed concurrently, then the spool closed:
// no goroutine outlives it.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{Dir: t.TempDir(), FlushInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			r, err := s.Create(context.Background(), testMetadata(fmt.Sprintf("s%d", i)), testHeader)
			if err != nil {
				t.Error(err)
				return
			}
			for j := range 20 {
				_ = r.Output(fmt.Appendf(nil, "line %d\r\n", j))
				time.Sleep(time.Millisecond)
			}
			if i%2 == 0 {
				if _, err := r.Close(context.Background(), recorder.EndInfo{}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	es, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Live {
			t.Errorf("%s still live after Close", e.SessionID)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
