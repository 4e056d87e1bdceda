package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sshward/sshward/playback/store/storetest"
)

func TestSegmentRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"ls", "systemctl", "restart", "nginx", "grüße", "Ünïcode", "404", "a3f9c2d1", "x", "_under_score"}
	var lines []Line
	for i := range segMaxLines - 5 {
		var b strings.Builder
		for range 1 + rng.IntN(8) {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteString(" ")
		}
		tm := float64(i) * 0.013
		if i%7 == 0 {
			tm = float64(i) + 1.0/3 // not whole microseconds
		}
		code := "o"
		if i%5 == 0 {
			code = "i"
		}
		lines = append(lines, Line{Time: tm, Code: code, Text: strings.TrimSpace(b.String())})
	}
	var enc segEncoder
	wholeHead, _, wholeBlocks, err := enc.appendSegment(nil, nil, lines)
	if err != nil {
		t.Fatal(err)
	}
	// Built a batch at a time, as a live recording's segment is: the blocks
	// before the last are never written again.
	var head []byte
	var blocks [][]byte
	for i := 0; i < len(lines); {
		n := min(1+rng.IntN(90), len(lines)-i)
		var tail []byte
		if len(blocks) > 0 {
			tail = blocks[len(blocks)-1]
		}
		h, first, bs, err := enc.appendSegment(head, tail, lines[i:i+n])
		if err != nil {
			t.Fatal(err)
		}
		if first != i/linesPerBlock {
			t.Fatalf("after %d lines the first block written is %d", i, first)
		}
		head, blocks = h, append(blocks[:first], bs...)
		i += n
	}
	type built struct {
		head   []byte
		blocks [][]byte
	}
	for name, v := range map[string]built{"whole": {wholeHead, wholeBlocks}, "grown": {head, blocks}} {
		got, err := segmentLines(v.head, v.blocks)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(lines) {
			t.Fatalf("%s: lines differ after the round trip", name)
		}
		sg, err := parseSegment(v.head)
		if err != nil {
			t.Fatal(err)
		}
		// Every word prefix finds exactly the blocks of the lines holding a
		// word with that prefix.
		for _, p := range []string{"sys", "nginx", "gr", "ünï", "40", "a3f9", "_under", "zzz", "l"} {
			want := map[int]bool{}
			for i, l := range lines {
				if hasWordPrefix(l.Text, []byte(p)) {
					want[i/linesPerBlock] = true
				}
			}
			got := map[int]bool{}
			sg.lookup([]byte(p), nil, func(_, postings []byte) bool {
				decodePostings(postings, func(b int) bool { got[b] = true; return true })
				return true
			})
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: prefix %q: blocks %v, want %v", name, p, got, want)
			}
		}
	}
	if !bytes.Equal(wholeHead[:1], []byte{segVersion}) {
		t.Fatal("version byte")
	}
	if _, _, _, err := enc.appendSegment(wholeHead, wholeBlocks[len(wholeBlocks)-1], make([]Line, segMaxLines)); err == nil {
		t.Fatal("a segment grew past segMaxLines")
	}
}

// FuzzSegment: no segment bytes, however damaged, make the reader panic or
// read out of bounds.
func FuzzSegment(f *testing.F) {
	var enc segEncoder
	head, _, blocks, _ := enc.appendSegment(nil, nil, []Line{{0.5, "o", "root@db1:~# systemctl stop postgresql"}, {1.25, "i", "systemctl stop postgresql"}})
	f.Add(head, blocks[0])
	f.Add([]byte{segVersion, 1, 1, 0, 0}, []byte{})
	f.Fuzz(func(t *testing.T, head, block []byte) {
		var br blockReader
		br.each(block, 3, func(byte, float64, []byte) bool { return true })
		sg, err := parseSegment(head)
		if err != nil {
			return
		}
		for _, p := range []string{"s", "sys", "zz", ""} {
			sg.lookup([]byte(p), nil, func(_, postings []byte) bool {
				decodePostings(postings, func(int) bool { return true })
				return true
			})
		}
		if sg.nLines > 0 {
			segmentLines(head, [][]byte{block})
			enc.appendSegment(head, block, []Line{{1, "o", "more text"}})
		}
	})
}

// ingestChunked stores data as one recording in chunks of about chunk
// bytes, waiting for the indexer after each as a live recording that
// streams is indexed: the worst case for the index (its last segment is
// written again for every chunk).
func ingestChunked(t testing.TB, s *Store, id string, start time.Time, data []byte, chunk int) {
	t.Helper()
	ctx := context.Background()
	m := meta(id, "production", data)
	m.Start = start
	if _, err := s.Start(ctx, StartRequest{ID: id, Owner: "web1", Meta: m}); err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); {
		end := off + bytes.LastIndexByte(data[off:min(off+chunk, len(data))], '\n') + 1
		if end == off {
			end = off + bytes.IndexByte(data[off:], '\n') + 1
		}
		if _, err := s.Append(ctx, id, "web1", int64(off), data[off:end]); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitIndexed(ctx, id); err != nil {
			t.Fatal(err)
		}
		off = end
	}
	if _, err := s.Finish(ctx, FinishRequest{ID: id, Owner: "web1", Meta: m}); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitIndexed(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// indexBytes is the size of the search index: the pages bbolt has
// allocated in search.db (free ones included; not the tail it reserves when
// it grows the file, at most 16 MiB whatever the store's size).
func indexBytes(t testing.TB, dir string) int64 {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, searchDB), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// TestIndexSmallerThanCasts: the search index of realistic shell sessions
// (storetest.ShellCast: coloured prompts, typed commands, ls, ps, access
// logs, journalctl, kubectl, top…) is smaller than the casts, both as a
// live server leaves it (recordings streamed in small chunks, each indexed
// as it came) and compacted. The index of earlier versions was 4.4× the
// casts on this corpus (2.7× compacted).
func TestIndexSmallerThanCasts(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), Config{Dir: dir, InsecureSkipSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var casts int64
	n := 24
	if testing.Short() {
		n = 8
	}
	for i := range n {
		data := storetest.ShellCast(uint64(i), 20_000+i*3_000, i%2 == 0)
		casts += int64(len(data))
		chunk := 64 << 10 // shipped after the fact
		if i%3 == 0 {
			chunk = 2 << 10 // streamed live
		}
		ingestChunked(t, s, fmt.Sprint("s-", i), t0.Add(time.Duration(i)*time.Minute), data, chunk)
	}
	hits, err := s.Search(context.Background(), Query{Text: "systemctl status", Limit: 5})
	if err != nil || len(hits) == 0 || !strings.Contains(strings.ToLower(hits[0].Text), "systemctl status") {
		t.Fatalf("search over the corpus: %v %v", hits, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	live := indexBytes(t, dir)
	if err := Compact(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	compacted := indexBytes(t, dir)
	t.Logf("casts %d bytes; search index %d bytes (%.2f×), compacted %d (%.2f×)", casts, live, float64(live)/float64(casts), compacted, float64(compacted)/float64(casts))
	if live > casts || compacted > casts {
		t.Fatalf("search index %d bytes (compacted %d) for %d bytes of casts: larger than the recordings", live, compacted, casts)
	}
}

// makeLegacy turns dir's store into what an earlier version left: index.db
// without a synced freelist, a text.db in the old format, no search.db.
func makeLegacy(t testing.TB, dir string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, indexDB), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("legacy-touch"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	os.Remove(filepath.Join(dir, searchDB))
	tdb, err := bolt.Open(filepath.Join(dir, legacyTextDB), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	tdb.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists([]byte("lines"))
		return b.Put([]byte("s-0\x00\x00\x00\x00\x00"), []byte("\x00\x00\x00\x00\x00\x00\x00\x00olegacy text of a purged recording"))
	})
	tdb.Close()
}

// TestOpenDoesNotWaitForTheIndex: a store whose search index is far behind
// (an older version's index, dropped and rebuilt from the casts) opens,
// takes new recordings and answers searches while the catch-up has not
// even started; IndexStatus says how many recordings are pending, and once
// indexing runs every recording is found and the old index file is gone.
func TestOpenDoesNotWaitForTheIndex(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, Config{Dir: dir, InsecureSkipSync: true})
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		ingestChunked(t, s, fmt.Sprint("s-", i), t0.Add(time.Duration(i)*time.Minute), cast(fmt.Sprintf(`[0.5,"o","catchup-word %d\r\n"]`, i)), 1<<20)
	}
	s.Close()
	makeLegacy(t, dir)

	gate := make(chan struct{})
	s, err = Open(ctx, Config{Dir: dir, IndexingGate: gate})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitUntil(t, "the start-up scan", func() bool { return s.IndexStatus().Scanned })
	if st := s.IndexStatus(); st.Pending != n {
		t.Fatalf("index status %+v with indexing held: want %d pending", st, n)
	}
	if _, err := os.Stat(filepath.Join(dir, legacyTextDB)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old index file is still there: %v", err)
	}
	// Ingest and reads do not wait for the index.
	ingest(t, s, "new-1", "staging", cast(`[0.1,"o","fresh output\r\n"]`))
	if recs, err := s.List(ctx, ListFilter{}); err != nil || len(recs) != n+1 {
		t.Fatalf("list while indexing is held: %d %v", len(recs), err)
	}
	if hits, err := s.Search(ctx, Query{Text: "catchup-word"}); err != nil || len(hits) != 0 {
		t.Fatalf("search before the catch-up: %v %v", hits, err)
	}
	close(gate)
	for i := range n {
		if err := s.WaitIndexed(ctx, fmt.Sprint("s-", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WaitIndexed(ctx, "new-1"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the catch-up", func() bool { return s.IndexStatus().Pending == 0 })
	hits, err := s.Search(ctx, Query{Text: "catchup-word", Limit: 1000, PerSession: 1})
	if err != nil || len(hits) != n {
		t.Fatalf("search after the catch-up: %d hits %v", len(hits), err)
	}
	if hits[0].SessionID != fmt.Sprint("s-", n-1) || hits[n-1].SessionID != "s-0" {
		t.Fatalf("hits not newest first: %v … %v", hits[0], hits[n-1])
	}
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory (unmounted at
// cleanup), or skips the test where mounting is not allowed.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("a full disk needs a small tmpfs, and mount(2) is not allowed here (%v): run as root", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes a file until the file system is full and returns its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// TestIndexingRecoversAfterDiskFull: on a real full disk (a small tmpfs),
// indexing a recording fails; once space is freed, without a restart or a
// new byte from the host, the indexer retries by itself and the recording
// is found by search. A recording that could not start or append while the
// disk was full starts, appends and finishes once space is back, and is
// listed finished with all its bytes.
func TestIndexingRecoversAfterDiskFull(t *testing.T) {
	ctx := context.Background()
	dir := mountTmpfs(t, 6<<20)
	gate := make(chan struct{})
	s, err := Open(ctx, Config{Dir: dir, IndexingGate: gate})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := storetest.ShellCast(7, 200_000, true)
	m := meta("full-1", "production", data)
	if _, err := s.Start(ctx, StartRequest{ID: "full-1", Owner: "web1", Meta: m}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "full-1", "web1", 0, data); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(ctx, FinishRequest{ID: "full-1", Owner: "web1", Meta: m}); err != nil {
		t.Fatal(err)
	}
	filler := fillDisk(t, dir)
	close(gate) // the indexer now writes to a full disk
	waitUntil(t, "the index write to fail", func() bool { return s.IndexStatus().Retrying > 0 })

	// A second recording meets the full disk too.
	more := cast(`[0.1,"o","written after the disk filled\r\n"]`)
	m2 := meta("full-2", "production", more)
	_, startErr := s.Start(ctx, StartRequest{ID: "full-2", Owner: "web1", Meta: m2})
	if startErr == nil {
		if _, err := s.Append(ctx, "full-2", "web1", 0, more); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("append on a full disk: %v", err)
		}
	} else {
		t.Logf("start on a full disk: %v", startErr)
	}
	if hits, _ := s.Search(ctx, Query{Text: "systemctl"}); len(hits) != 0 {
		t.Fatalf("hits before the index was written: %v", hits)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The host retries as it does after any failure; the server needs
	// nothing else.
	if _, err := s.Start(ctx, StartRequest{ID: "full-2", Owner: "web1", Meta: m2}); err != nil {
		t.Fatalf("start once space is back: %v", err)
	}
	if _, err := s.Append(ctx, "full-2", "web1", 0, more); err != nil {
		t.Fatalf("append once space is back: %v", err)
	}
	if _, err := s.Finish(ctx, FinishRequest{ID: "full-2", Owner: "web1", Meta: m2}); err != nil {
		t.Fatalf("finish once space is back: %v", err)
	}
	waitUntil(t, "the failed index write to be retried", func() bool {
		hits, _ := s.Search(ctx, Query{Text: "systemctl", Filter: func(r *Record) bool { return r.ID == "full-1" }})
		return len(hits) > 0
	})
	waitUntil(t, "the second recording's text", func() bool {
		hits, _ := s.Search(ctx, Query{Text: "after the disk filled"})
		return len(hits) == 1
	})
	// The counters drop just after the write they count is visible.
	waitUntil(t, "the index status to settle", func() bool {
		st := s.IndexStatus()
		return st.Retrying == 0 && st.Pending == 0
	})
	recs, err := s.List(ctx, ListFilter{})
	if err != nil || len(recs) != 2 {
		t.Fatalf("list: %+v %v", recs, err)
	}
	for _, r := range recs {
		want := map[string]int64{"full-1": int64(len(data)), "full-2": int64(len(more))}[r.ID]
		if !r.Finished || r.Stored != want {
			t.Errorf("%s listed finished=%v with %d bytes, want finished with %d", r.ID, r.Finished, r.Stored, want)
		}
	}
}
