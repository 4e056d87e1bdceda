package playback_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/playback/objstore/s3test"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// Benchmarks for `make bench` (DESIGN.md "Targets"; issue 5 "Benchmarks").
// They run with -benchtime 1x there, so each iteration does a fixed,
// meaningful amount of work and reports its own rates with ReportMetric.

var words = []string{"ls", "cd", "cat", "grep", "sudo", "systemctl", "status", "nginx", "postgres", "journalctl",
	"deploy", "release", "error", "warning", "ok", "done", "tail", "var", "log", "etc", "config", "backup",
	"restart", "docker", "kubectl", "pods", "running", "pending", "users", "home", "tmp", "disk", "memory"}

// genCast returns an asciicast of about size bytes of shell-like output.
func genCast(size int, rng *mrand.Rand) []byte {
	var b bytes.Buffer
	b.Grow(size + 256)
	b.WriteString(`{"version":2,"width":80,"height":24,"timestamp":1795251600}` + "\n")
	t := 0.0
	for i := 0; b.Len() < size; i++ {
		t += 0.013
		line := make([]byte, 0, 96)
		for j := 0; j < 8; j++ {
			line = append(line, words[rng.IntN(len(words))]...)
			line = append(line, ' ')
		}
		line = strconv.AppendInt(line, int64(i), 10)
		ev, _ := json.Marshal([]any{json.Number(strconv.FormatFloat(t, 'f', 6, 64)), "o", string(line) + "\r\n"})
		b.Write(ev)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// ingester is a minimal agent-side client of the ingest API: start,
// chunks, finish, each signed with the host certificate.
type ingester struct {
	base string
	hc   *http.Client
	h    *host
}

func (in *ingester) do(ctx context.Context, method, path string, body []byte, hdr map[string]string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, in.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if err := hostauth.Sign(req, body, in.h.cert, in.h.signer, time.Now(), rand.Reader); err != nil {
		return nil, err
	}
	resp, err := in.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return out, nil
}

func (in *ingester) ingest(ctx context.Context, id string, data []byte, chunk int) error {
	m := recorder.Metadata{SessionID: id, Identity: "bob", Principal: "root", Tier: "staging", Host: "web1", Kind: recorder.KindShell,
		Start: time.Now(), Complete: true, Finished: true}
	mj, _ := json.Marshal(m)
	if _, err := in.do(ctx, http.MethodPost, recorder.IngestPath(id, recorder.IngestStart), mj, map[string]string{"Content-Type": "application/json"}); err != nil {
		return err
	}
	for off := 0; off < len(data); {
		end := min(off+chunk, len(data))
		end = off + bytes.LastIndexByte(data[off:end], '\n') + 1
		c := data[off:end]
		path := recorder.IngestPath(id, recorder.IngestChunk) + "?offset=" + strconv.Itoa(off)
		if _, err := in.do(ctx, http.MethodPut, path, c, map[string]string{recorder.ChunkDigestHeader: recorder.ChunkDigest(c)}); err != nil {
			return err
		}
		off = end
	}
	sum := sha256.Sum256(data)
	m.SHA256, m.CastBytes = hex.EncodeToString(sum[:]), int64(len(data))
	sig, err := recorder.SignRecording(in.h.signer, rand.Reader, m)
	if err != nil {
		return err
	}
	fj, _ := json.Marshal(recorder.IngestFinishRequest{Metadata: m, Signature: sig})
	_, err = in.do(ctx, http.MethodPost, recorder.IngestPath(id, recorder.IngestFinish), fj, map[string]string{"Content-Type": "application/json"})
	return err
}

// BenchmarkIngest: recordings of 1 MiB shipped in 256 KiB chunks (each
// fsynced before it is acknowledged) over HTTPS with host authentication,
// by 1, 16 and 64 agents at once. disk: one server on its local disk.
// s3: a replica on a bucket of a real S3-compatible server (versitygw,
// posix backend, HTTPS on loopback, same machine): every chunk is also put
// to the bucket before it is acknowledged (shared uploads), and the clock
// stops only when every recording is archived (cast and record objects
// written, parts deleted), so MB/s is what reaches object storage.
func BenchmarkIngest(b *testing.B) {
	w := newWorld(b)
	h := newHost(b, "web1", w.ca.HostCA, ssh.HostCert)
	data := genCast(1<<20, mrand.New(mrand.NewPCG(1, 2)))
	var seq atomic.Int64
	for _, backend := range []string{"disk", "s3"} {
		b.Run(backend, func(b *testing.B) {
			var opts serverOpts
			if backend == "s3" {
				opts.objects = openBucket(b, s3test.Start(b))
			}
			srv := w.startServer(b, opts)
			for _, conc := range []int{1, 16, 64} {
				b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
					benchIngest(b, w, srv, h, data, conc, &seq, opts.objects != nil)
				})
			}
		})
	}
}

func benchIngest(b *testing.B, w *world, srv *server, h *host, data []byte, conc int, seq *atomic.Int64, archiving bool) {
	hc := w.httpClient(b)
	hc.Transport.(*http.Transport).MaxIdleConnsPerHost = conc
	in := &ingester{base: srv.url, hc: hc, h: h}
	perIter := max(64, 2*conc)
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		archived := srv.ArchiveStatus().Archived
		start := time.Now()
		var wg sync.WaitGroup
		jobs := make(chan int)
		errc := make(chan error, conc)
		for range conc {
			wg.Go(func() {
				for range jobs {
					id := fmt.Sprintf("bench-%d", seq.Add(1))
					if err := in.ingest(context.Background(), id, data, 256<<10); err != nil {
						select {
						case errc <- err:
						default:
						}
					}
				}
			})
		}
		for i := range perIter {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		if archiving {
			deadline := time.Now().Add(5 * time.Minute)
			for st := srv.ArchiveStatus(); st.Archived < archived+perIter; st = srv.ArchiveStatus() {
				if time.Now().After(deadline) {
					b.Fatalf("archive: %+v after 5 minutes, want %d more archived", st, perIter)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		total += time.Since(start)
		select {
		case err := <-errc:
			b.Fatal(err)
		default:
		}
	}
	recs := float64(perIter * b.N)
	b.ReportMetric(recs*float64(len(data))/(1<<20)/total.Seconds(), "MB/s")
	b.ReportMetric(recs/total.Seconds(), "recordings/s")
}

// BenchmarkSearch: full-text queries over 10,000 indexed recordings
// (generated into a store, about 40 lines each; 1% hold a rare command).
func BenchmarkSearch(b *testing.B) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Dir: b.TempDir(), InsecureSkipSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const n = 10000
	start := time.Now()
	var wg sync.WaitGroup
	ids := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range ids {
				rng := mrand.New(mrand.NewPCG(uint64(i), 7))
				data := genCast(3000, rng)
				if i%100 == 0 {
					data = append(data, []byte(`[9.5,"i","dropdb --force customers\r"]`+"\n")...)
				}
				id := fmt.Sprintf("rec-%05d", i)
				sum := sha256.Sum256(data)
				m := recorder.Metadata{SessionID: id, Identity: fmt.Sprint("user", i%50), Tier: "production", Kind: recorder.KindShell,
					Start: time.Unix(1795251600+int64(i)*60, 0), SHA256: hex.EncodeToString(sum[:]), CastBytes: int64(len(data)), Finished: true}
				if _, err := st.Start(ctx, store.StartRequest{ID: id, Owner: "web1", Meta: m}); err != nil {
					b.Error(err)
					return
				}
				if _, err := st.Append(ctx, id, "web1", 0, data); err != nil {
					b.Error(err)
					return
				}
				if _, err := st.Finish(ctx, store.FinishRequest{ID: id, Owner: "web1", Meta: m}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	for i := range n {
		ids <- i
	}
	close(ids)
	wg.Wait()
	for i := range n {
		if err := st.WaitIndexed(ctx, fmt.Sprintf("rec-%05d", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("generated and indexed %d recordings in %s", n, time.Since(start).Round(time.Millisecond))
	queries := []struct {
		name, q string
		min     int
	}{
		{"rare-command", "dropdb --force", 100},
		{"common-word", "systemctl", 100},
		{"phrase", "nginx postgres", 1},
	}
	for _, q := range queries {
		b.Run(q.name, func(b *testing.B) {
			var lat []time.Duration
			b.ResetTimer()
			for range b.N {
				for range 50 {
					t0 := time.Now()
					hits, err := st.Search(ctx, store.Query{Text: q.q, Limit: 100})
					lat = append(lat, time.Since(t0))
					if err != nil || len(hits) < q.min {
						b.Fatalf("%q: %d hits, %v", q.q, len(hits), err)
					}
				}
			}
			reportLatency(b, lat)
		})
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
	b.ReportMetric(float64(len(lat))/sum.Seconds(), "ops/s")
}

// BenchmarkCastFirstByte: time from sending GET /api/sessions/{id}/cast
// (HTTPS, auditor session) to its first byte and to its first event line
// (the first frame a player can draw), for recordings of 1 MB and 100 MB.
func BenchmarkCastFirstByte(b *testing.B) {
	w := newWorld(b)
	srv := w.startServer(b, serverOpts{})
	ctx := context.Background()
	hc := w.httpClient(b)
	for _, size := range []int{1 << 20, 100 << 20} {
		id := fmt.Sprintf("big-%dmb", size>>20)
		data := genCast(size, mrand.New(mrand.NewPCG(3, 4)))
		sum := sha256.Sum256(data)
		m := recorder.Metadata{SessionID: id, Tier: "staging", Kind: recorder.KindShell, SHA256: hex.EncodeToString(sum[:]), CastBytes: int64(len(data))}
		if _, err := srv.store.Start(ctx, store.StartRequest{ID: id, Owner: "web1", Meta: m}); err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(data); {
			end := min(off+(4<<20), len(data))
			end = off + bytes.LastIndexByte(data[off:end], '\n') + 1
			if _, err := srv.store.Append(ctx, id, "web1", int64(off), data[off:end]); err != nil {
				b.Fatal(err)
			}
			off = end
		}
		if _, err := srv.store.Finish(ctx, store.FinishRequest{ID: id, Owner: "web1", Meta: m}); err != nil {
			b.Fatal(err)
		}
		if err := srv.store.WaitIndexed(ctx, id); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("size=%dMB", size>>20), func(b *testing.B) {
			var first, frame []time.Duration
			b.ResetTimer()
			for range b.N {
				for range 20 {
					req, _ := http.NewRequest(http.MethodGet, srv.url+"/api/sessions/"+id+"/cast", nil)
					req.Header.Set("Authorization", "Bearer "+w.auditor)
					t0 := time.Now()
					resp, err := hc.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					buf := make([]byte, 4096)
					n, err := io.ReadAtLeast(resp.Body, buf, 1)
					first = append(first, time.Since(t0))
					for err == nil && bytes.Count(buf[:n], []byte("\n")) < 2 {
						var k int
						k, err = resp.Body.Read(buf[n:])
						n += k
					}
					frame = append(frame, time.Since(t0))
					resp.Body.Close() // the rest is not read: a player starts here
					if err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
			}
			slices.Sort(frame)
			b.ReportMetric(float64(frame[len(frame)/2])/float64(time.Millisecond), "first-frame-ms")
			reportLatency(b, first)
		})
	}
}
