package playback_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/playback/store/storetest"
	"github.com/sshward/sshward/recorder"
)

// fillStore stores n finished recordings in dir (realistic shell sessions
// of about size bytes each, size 0: 2–60 KB at random; recording i also
// holds the word "coldstartI") and returns their cast bytes. Indexing is
// held, so the store is left with its search index entirely behind, as an
// upgrade from an index of an older format leaves it; index: index them
// all before closing.
func fillStore(t testing.TB, dir string, n, size int, index bool) int64 {
	t.Helper()
	ctx := context.Background()
	hold := make(chan struct{})
	if index {
		close(hold)
	}
	st, err := store.Open(ctx, store.Config{Dir: dir, InsecureSkipSync: true, IndexingGate: hold})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var total int64
	var wg sync.WaitGroup
	ids := make(chan int)
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for range 2 {
		wg.Go(func() {
			for i := range ids {
				sz := size
				if sz == 0 {
					sz = 2_000 + rand.New(rand.NewPCG(uint64(i), 1)).IntN(58_000)
				}
				data := storetest.ShellCast(uint64(i), sz, i%2 == 0)
				data = fmt.Appendf(data, "[9999.5, \"o\", \"coldstart%d\\r\\n\"]\n", i)
				id := fmt.Sprintf("rec-%05d", i)
				m := recorder.Metadata{SessionID: id, Identity: "bob", Tier: "production", Host: "web1", Kind: recorder.KindShell,
					Start: base.Add(time.Duration(i) * time.Minute), Finished: true, Complete: true}
				m.SHA256, m.CastBytes = digest(data), int64(len(data))
				if _, err := st.Start(ctx, store.StartRequest{ID: id, Owner: "web1", Meta: m}); err != nil {
					t.Error(err)
					return
				}
				if _, err := st.Append(ctx, id, "web1", 0, data); err != nil {
					t.Error(err)
					return
				}
				if _, err := st.Finish(ctx, store.FinishRequest{ID: id, Owner: "web1", Meta: m}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				total += int64(len(data))
				mu.Unlock()
			}
		})
	}
	for i := range n {
		ids <- i
	}
	close(ids)
	wg.Wait()
	if index {
		for i := range n {
			if err := st.WaitIndexed(ctx, fmt.Sprintf("rec-%05d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return total
}

type searchAnswer struct {
	Hits         []store.Hit `json:"hits"`
	IndexPending *int        `json:"index_pending"`
	IndexNote    string      `json:"index_note"`
}

// TestColdStartServesBeforeCatchUp: a server started on a store of 2,000
// recordings whose search index is entirely behind answers /healthz, takes
// a new recording over HTTPS and answers searches while the catch-up has
// not started (indexing is held: were any of them waiting for it, the
// test would hang), and the search answer says how many recordings it did
// not search. Once indexing runs, the old recordings are found and the
// note goes.
func TestColdStartServesBeforeCatchUp(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 200
	}
	w := newWorld(t)
	dir := t.TempDir()
	fillStore(t, dir, n, 1500, false)

	gate := make(chan struct{})
	srv := w.startServer(t, serverOpts{dir: dir, indexGate: gate})
	hc := w.httpClient(t)
	resp, err := hc.Get(srv.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
	h := newHost(t, "web1", w.ca.HostCA, ssh.HostCert)
	in := &ingester{base: srv.url, hc: hc, h: h}
	fresh := storetest.ShellCast(1<<40, 4000, true)
	if err := in.ingest(context.Background(), "fresh-1", fresh, 64<<10); err != nil {
		t.Fatalf("ingest while the index catches up: %v", err)
	}
	if rec, err := srv.store.Get(context.Background(), "fresh-1"); err != nil || !rec.Finished || rec.Stored != int64(len(fresh)) {
		t.Fatalf("fresh recording %+v %v", rec, err)
	}
	waitFor(t, "the start-up scan", 30*time.Second, func() bool { return srv.store.IndexStatus().Scanned })
	var ans searchAnswer
	w.getJSON(t, srv.url+"/api/search?q=coldstart1", w.auditor, &ans)
	if len(ans.Hits) != 0 || ans.IndexPending == nil || *ans.IndexPending != n || !strings.Contains(ans.IndexNote, fmt.Sprint(n, " recordings")) {
		t.Fatalf("search before the catch-up: %d hits, pending %v, note %q: want no hit and %d pending", len(ans.Hits), ans.IndexPending, ans.IndexNote, n)
	}

	close(gate)
	waitFor(t, "the catch-up", 5*time.Minute, func() bool { return srv.store.IndexStatus().Pending == 0 })
	ans = searchAnswer{}
	w.getJSON(t, srv.url+"/api/search?q="+fmt.Sprint("coldstart", n-1), w.auditor, &ans)
	if len(ans.Hits) != 1 || ans.Hits[0].SessionID != fmt.Sprintf("rec-%05d", n-1) || ans.IndexPending != nil {
		t.Fatalf("search after the catch-up: %+v", ans)
	}
}

// BenchmarkColdStart10k: a server's start on a store of 10,000 recordings
// of realistic shell sessions (2–60 KB each, about 300 MB of casts), from
// the call that opens the store to the first /healthz answer (ready-ms) and
// a recording shipped over HTTPS after it (ingest-ms), with the search
// index complete (start=indexed) and after an upgrade that left it to be
// rebuilt from the casts (start=rebuild; catchup-s: until every recording
// is searchable again). The page cache is dropped first where the
// benchmark may (root), so that the start reads from disk (cold=1).
// index-ratio is search.db's allocated pages over the cast bytes.
func BenchmarkColdStart10k(b *testing.B) {
	n := 10_000
	if testing.Short() {
		n = 1_000
	}
	w := newWorld(b)
	dir := b.TempDir()
	t0 := time.Now()
	casts := fillStore(b, dir, n, 0, true)
	b.Logf("stored and indexed %d recordings (%d MB of casts) in %s", n, casts>>20, time.Since(t0).Round(time.Second))
	size := func(name string) int64 {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		return fi.Size()
	}
	db, err := bolt.Open(filepath.Join(dir, "search.db"), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	var used int64
	db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
	db.Close()
	b.Logf("casts %d bytes; search.db %d bytes allocated (%.2f×), file %d bytes; index.db file %d bytes",
		casts, used, float64(used)/float64(casts), size("search.db"), size("index.db"))
	b.ReportMetric(float64(used)/float64(casts), "index-ratio")
	h := newHost(b, "web1", w.ca.HostCA, ssh.HostCert)
	// The first start on dir joins the CA; the timed ones below reuse its
	// identity, as a restart does.
	w.startServer(b, serverOpts{dir: dir}).stop()

	for _, mode := range []string{"indexed", "rebuild"} {
		b.Run("start="+mode, func(b *testing.B) {
			for i := range b.N {
				if mode == "rebuild" {
					os.Remove(filepath.Join(dir, "search.db")) // what an upgrade from text.db leaves
				}
				cold := dropPageCache()
				start := time.Now()
				srv := w.startServer(b, serverOpts{dir: dir})
				hc := w.httpClient(b)
				for {
					resp, err := hc.Get(srv.url + "/healthz")
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == http.StatusOK {
							break
						}
					}
					time.Sleep(time.Millisecond)
				}
				ready := time.Since(start)
				in := &ingester{base: srv.url, hc: hc, h: h}
				if err := in.ingest(context.Background(), fmt.Sprintf("after-%s-%d", mode, i), storetest.ShellCast(uint64(i), 8000, true), 64<<10); err != nil {
					b.Fatal(err)
				}
				ingested := time.Since(start)
				for srv.store.IndexStatus().Pending > 0 || !srv.store.IndexStatus().Scanned {
					time.Sleep(10 * time.Millisecond)
				}
				caught := time.Since(start)
				hits, err := srv.store.Search(context.Background(), store.Query{Text: fmt.Sprint("coldstart", n/2)})
				if err != nil || len(hits) != 1 {
					b.Fatalf("search after the start: %v %v", hits, err)
				}
				srv.stop()
				b.ReportMetric(float64(ready.Microseconds())/1000, "ready-ms")
				b.ReportMetric(float64(ingested.Microseconds())/1000, "ingest-ms")
				b.ReportMetric(caught.Seconds(), "catchup-s")
				b.ReportMetric(float64(cold), "cold")
			}
		})
	}
}

// dropPageCache asks the kernel to drop clean cached pages (root only) and
// reports whether it did.
func dropPageCache() int {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1\n"), 0); err != nil {
		return 0
	}
	return 1
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
