package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sshward/sshward/recorder"
)

// t0 is the fixed clock of stores opened by mustOpenAt: tests compare it with
// fixed dates, so they pass on any day.
var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

func mustOpen(t testing.TB, dir string) *Store {
	t.Helper()
	return mustOpenAt(t, dir, nil)
}

// mustOpenAt opens a store whose clock is now (nil: the wall clock).
func mustOpenAt(t testing.TB, dir string, now func() time.Time) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(context.Background(), Config{Dir: dir, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// cast builds a cast: header, then one event line per event.
func cast(evs ...string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"version":2,"width":80,"height":24}` + "\n")
	for _, e := range evs {
		b.WriteString(e + "\n")
	}
	return b.Bytes()
}

func meta(id, tier string, data []byte) recorder.Metadata {
	sum := sha256.Sum256(data)
	return recorder.Metadata{SessionID: id, Identity: "alice", Tier: tier, Host: "web1", Kind: recorder.KindShell,
		Start: t0, SHA256: hex.EncodeToString(sum[:]), CastBytes: int64(len(data)),
		Finished: true, Complete: true}
}

// ingest stores data as one recording, in chunks of whole lines.
func ingest(t testing.TB, s *Store, id, tier string, data []byte) *Record {
	t.Helper()
	ctx := context.Background()
	m := meta(id, tier, data)
	stored, err := s.Start(ctx, StartRequest{ID: id, Owner: "web1", Meta: m})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if stored, err = s.Append(ctx, id, "web1", stored, line); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := s.Finish(ctx, FinishRequest{ID: id, Owner: "web1", Meta: m, Signature: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestIngestLifecycle(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, "")
	data := cast(`[0.1,"o","hello\r\n"]`, `[0.5,"o","world\r\n"]`)
	m := meta("s1", "staging", data)
	if n, err := s.Start(ctx, StartRequest{ID: "s1", Owner: "web1", Meta: m}); err != nil || n != 0 {
		t.Fatalf("start: %d %v", n, err)
	}
	if _, err := s.Start(ctx, StartRequest{ID: "s1", Owner: "web2", Meta: m}); !errors.Is(err, ErrOwner) {
		t.Fatalf("start by another host: %v", err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	n, err := s.Append(ctx, "s1", "web1", 0, lines[0])
	if err != nil || n != int64(len(lines[0])) {
		t.Fatalf("append: %d %v", n, err)
	}
	var oe *OffsetError
	if _, err := s.Append(ctx, "s1", "web1", 0, lines[0]); !errors.As(err, &oe) || oe.Stored != n {
		t.Fatalf("duplicate chunk: %v", err)
	}
	if _, err := s.Append(ctx, "s1", "web1", n, []byte(`[0.2,"o","x"]`)); !errors.Is(err, ErrChunk) {
		t.Fatalf("chunk without newline: %v", err)
	}
	if _, err := s.Append(ctx, "s1", "web2", n, lines[1]); !errors.Is(err, ErrOwner) {
		t.Fatalf("append by another host: %v", err)
	}
	if _, err := s.Append(ctx, "nope", "web1", 0, lines[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("append to unknown: %v", err)
	}
	// Resumed start tells the stored size.
	if got, err := s.Start(ctx, StartRequest{ID: "s1", Owner: "web1", Meta: m}); err != nil || got != n {
		t.Fatalf("restart: %d %v", got, err)
	}
	// Finish before everything arrived: digest mismatch discards.
	if _, err := s.Finish(ctx, FinishRequest{ID: "s1", Owner: "web1", Meta: m}); !errors.Is(err, ErrDigest) {
		t.Fatalf("early finish: %v", err)
	}
	if cs, _, _ := s.Cast("s1"); cs.Size != 0 || cs.Generation != 1 {
		t.Fatalf("after discard: %+v", cs)
	}
	var stored int64
	for _, l := range lines[:3] {
		if stored, err = s.Append(ctx, "s1", "web1", stored, l); err != nil {
			t.Fatal(err)
		}
	}
	verifyErr := errors.New("bad sig")
	if _, err := s.Finish(ctx, FinishRequest{ID: "s1", Owner: "web1", Meta: m, Verify: func(recorder.Metadata) error { return verifyErr }}); !errors.Is(err, verifyErr) {
		t.Fatalf("finish with a bad signature: %v", err)
	}
	rec, err := s.Finish(ctx, FinishRequest{ID: "s1", Owner: "web1", Meta: m, Signature: "sig"})
	if err != nil || !rec.Finished || rec.Stored != int64(len(data)) {
		t.Fatalf("finish: %+v %v", rec, err)
	}
	if _, err := s.Finish(ctx, FinishRequest{ID: "s1", Owner: "web1", Meta: m}); err != nil {
		t.Fatalf("finish again: %v", err)
	}
	other := m
	other.SHA256 = strings.Repeat("0", 64)
	if _, err := s.Finish(ctx, FinishRequest{ID: "s1", Owner: "web1", Meta: other}); !errors.Is(err, ErrConflict) {
		t.Fatalf("finish with another digest: %v", err)
	}
	if _, err := s.Append(ctx, "s1", "web1", stored, lines[0]); !errors.As(err, &oe) || oe.Stored != stored {
		t.Fatalf("append after finish: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(s.blobDir, "s1.cast"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored cast %q, want %q (%v)", got, data, err)
	}
	if sum, size, err := s.Digest("s1"); err != nil || sum != m.SHA256 || size != m.CastBytes {
		t.Fatalf("digest %s %d %v", sum, size, err)
	}
	evs, err := s.Audit(ctx, AuditFilter{Type: "recording.finish"})
	if err != nil || len(evs) != 1 || evs[0].Subject != "s1" || evs[0].Details["sha256"] != m.SHA256 {
		t.Fatalf("audit: %+v %v", evs, err)
	}
}

func TestRecoveryCutsUnacknowledgedBytes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	data := cast(`[0.1,"o","a"]`)
	if _, err := s.Start(ctx, StartRequest{ID: "s1", Owner: "h", Meta: meta("s1", "staging", data)}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Append(ctx, "s1", "h", 0, data)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// What a crash in the middle of the next chunk leaves behind.
	f, _ := os.OpenFile(filepath.Join(dir, "blobs", "s1.cast"), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`[0.2,"o","par`)
	f.Close()
	s = mustOpen(t, dir)
	if got, err := s.Start(ctx, StartRequest{ID: "s1", Owner: "h"}); err != nil || got != n {
		t.Fatalf("stored after crash = %d (%v), want %d", got, err, n)
	}
	if _, err := s.Finish(ctx, FinishRequest{ID: "s1", Owner: "h", Meta: meta("s1", "staging", data)}); err != nil {
		t.Fatalf("finish after recovery: %v", err)
	}
}

func TestSearch(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, "")
	ingest(t, s, "prod1", "production", cast(
		`[0.5,"o","\u001b[1;32mroot@db1\u001b[0m:~# "]`,
		`[1.25,"i","s"]`, `[1.3,"o","s"]`, `[1.4,"i","x"]`, `[1.41,"o","x"]`, `[1.45,"i","\u007f"]`, `[1.5,"o","\b \b"]`,
		`[1.6,"i","ystemctl stop postgresql\r"]`,
		`[1.7,"o","ystemctl stop postgresql\r\n"]`,
		`[2,"m","session end status=0"]`))
	ingest(t, s, "stag1", "staging", cast(`[0.1,"o","Systemctl is fun\r\n"]`, `[0.2,"o","\u001b]0;title systemctl\u0007done\r\n"]`))
	ingest(t, s, "exec1", "staging", cast(`[0.001,"m","session start user=alice@local principal=alice kind=exec command=\"uname -a; df -h\""]`,
		`[0.01,"o","Linux vm 6.18\r\n"]`))
	for _, id := range []string{"prod1", "stag1", "exec1"} {
		if err := s.WaitIndexed(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		q    Query
		want []Hit
	}{
		{"typed command", Query{Text: "systemctl stop", Filter: func(r *Record) bool { return r.Meta.Tier == "production" }},
			[]Hit{{"prod1", 0.5, "o", "root@db1:~# systemctl stop postgresql"}, {"prod1", 1.25, "i", "systemctl stop postgresql"}}},
		{"prefix of a word", Query{Text: "postgr"},
			[]Hit{{"prod1", 0.5, "o", "root@db1:~# systemctl stop postgresql"}, {"prod1", 1.25, "i", "systemctl stop postgresql"}}},
		{"escapes stripped", Query{Text: "root@db1:~# sys"}, []Hit{{"prod1", 0.5, "o", "root@db1:~# systemctl stop postgresql"}}},
		{"osc title is not text", Query{Text: "title"}, []Hit{}},
		{"case and spaces", Query{Text: "SYSTEMCTL    is"}, []Hit{{"stag1", 0.1, "o", "Systemctl is fun"}}},
		{"limit", Query{Text: "systemctl", Limit: 1}, nil},
		{"no match", Query{Text: "nothing-here"}, []Hit{}},
		{"exec command line", Query{Text: "uname"}, []Hit{{"exec1", 0.001, "i", "uname -a; df -h"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Search(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if len(got) != tc.q.Limit {
					t.Fatalf("got %d hits, want %d", len(got), tc.q.Limit)
				}
				return
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
	if _, err := s.Search(ctx, Query{Text: "a !"}); !errors.Is(err, ErrQuery) {
		t.Fatalf("query without a word: %v", err)
	}
	ms, err := s.Markers(ctx, "prod1")
	if err != nil || len(ms) != 1 || ms[0].Label != "session end status=0" || ms[0].Time != 2 {
		t.Fatalf("markers %+v %v", ms, err)
	}
}

func TestRetention(t *testing.T) {
	ctx := context.Background()
	// Records are ingested at t0 by the store's clock: retention is judged
	// against that clock, never against the day the test runs.
	s := mustOpenAt(t, "", func() time.Time { return t0 })
	ingest(t, s, "old-staging", "staging", cast(`[0.1,"o","olderword\r\n"]`))
	ingest(t, s, "old-bg", "break-glass", cast(`[0.1,"o","olderword\r\n"]`))
	ingest(t, s, "old-prod", "production", cast(`[0.1,"o","olderword\r\n"]`))
	for _, id := range []string{"old-staging", "old-bg", "old-prod"} {
		s.WaitIndexed(ctx, id)
	}
	ret := map[string]time.Duration{"staging": 30 * 24 * time.Hour, "production": 365 * 24 * time.Hour, "break-glass": 0}
	now := t0.Add(40 * 24 * time.Hour)
	ids, err := s.Expired(ctx, now, func(tier string) time.Duration { return ret[tier] })
	if err != nil || fmt.Sprint(ids) != "[old-staging]" {
		t.Fatalf("expired %v %v", ids, err)
	}
	if _, err := s.Delete(ctx, "old-staging"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "old-staging"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.blobDir, "old-staging.cast")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cast file left: %v", err)
	}
	hits, _ := s.Search(ctx, Query{Text: "olderword"})
	if len(hits) != 2 {
		t.Fatalf("hits after delete %v", hits)
	}
	// No segment, marker or state of the deleted recording is left behind
	// (segment keys hold the id inverted: decode them).
	kept := 0
	s.sdb.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				id := string(k)
				if bytes.Equal(name, bucketSegments) {
					_, id, _ = parseSegKey(k)
				}
				if strings.Contains(id, "old-staging") || bytes.Contains(v, []byte("old-staging")) {
					t.Errorf("%s left: %q", name, k)
				} else {
					kept++
				}
				return nil
			})
		})
	})
	for _, id := range []string{"old-bg", "old-prod"} {
		if _, err := s.Get(ctx, id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

func TestAuditChain(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, "")
	for i := range 3 {
		if _, err := s.AppendAudit(ctx, AuditEvent{Type: "view", Actor: "audrey", Subject: fmt.Sprint("s", i), Details: map[string]string{"bad": "\xff"}}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := s.VerifyAudit(ctx)
	if err != nil || rep.Events != 3 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	tamper := func(fn func(tx *bolt.Tx) error) {
		t.Helper()
		if err := s.db.Update(fn); err != nil {
			t.Fatal(err)
		}
	}
	key := func(seq uint64) []byte { return []byte{0, 0, 0, 0, 0, 0, 0, byte(seq)} }
	var saved []byte
	tamper(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		saved = append([]byte(nil), b.Get(key(2))...)
		return b.Put(key(2), bytes.Replace(saved, []byte("audrey"), []byte("mallet"), 1))
	})
	var ce *ChainError
	if _, err := s.VerifyAudit(ctx); !errors.As(err, &ce) || ce.Seq != 2 {
		t.Fatalf("edited event: %v", err)
	}
	tamper(func(tx *bolt.Tx) error { return tx.Bucket(bucketAudit).Put(key(2), saved) })
	tamper(func(tx *bolt.Tx) error { return tx.Bucket(bucketAudit).Delete(key(3)) })
	if _, err := s.VerifyAudit(ctx); !errors.As(err, &ce) {
		t.Fatalf("truncated log: %v", err)
	}
}

func TestExtractor(t *testing.T) {
	tests := []struct {
		name string
		code string
		feed []string
		want []string
	}{
		{"crlf", "o", []string{"one\r\ntwo\r\n"}, []string{"one", "two"}},
		{"split escape", "o", []string{"a\x1b[3", "1mred\x1b[0m\r\n"}, []string{"ared"}},
		{"osc with st", "o", []string{"\x1b]2;win title\x1b\\prompt$ \n"}, []string{"prompt$"}},
		{"backspace echo", "o", []string{"lx\b \bs\n"}, []string{"ls"}},
		{"typed with del and arrow", "i", []string{"ls -lx\x7f", "a\x1b[A\r"}, []string{"ls -la"}},
		{"ctrl-u drops input", "i", []string{"rm -rf /\x15echo hi\r"}, []string{"echo hi"}},
		{"charset select", "o", []string{"\x1b(Bplain\n"}, []string{"plain"}},
		{"flush at end", "o", []string{"no newline"}, []string{"no newline"}},
		{"utf8", "o", []string{"grüße\r\n"}, []string{"grüße"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := Extractor{Code: tc.code}
			var out []Line
			for i, f := range tc.feed {
				out = x.Feed(float64(i), f, out)
			}
			out = x.Flush(out)
			var got []string
			for _, l := range out {
				got = append(got, l.Text)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %q want %q", got, tc.want)
			}
		})
	}
	x := Extractor{Code: "o"}
	long := x.Feed(0, strings.Repeat("a", 3*MaxLineText+5)+"\n", nil)
	if len(long) != 4 || len(long[0].Text) != MaxLineText {
		t.Fatalf("long line split into %d", len(long))
	}
}

// TestLiveRecordingsHoldNoDescriptors: thousands of live sessions must not
// run the server out of file descriptors (a regression: each live
// recording used to keep its cast open).
func TestLiveRecordingsHoldNoDescriptors(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, "")
	fds := func() int {
		des, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(des)
	}
	before := fds()
	line := cast(`[0.1,"o","x"]`)
	for i := range 200 {
		id := fmt.Sprint("live-", i)
		if _, err := s.Start(ctx, StartRequest{ID: id, Owner: "h"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, id, "h", 0, line); err != nil {
			t.Fatal(err)
		}
	}
	if after := fds(); after > before+20 {
		t.Fatalf("%d descriptors open for 200 live recordings (before %d)", after, before)
	}
}
