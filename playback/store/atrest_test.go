package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/sshward/sshward/recorder/atrest"
)

func newKey(t testing.TB) *age.X25519Identity {
	t.Helper()
	k, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keysOf encrypts to the recipients of enc and decrypts with dec.
func keysOf(enc []*age.X25519Identity, dec ...*age.X25519Identity) *atrest.Keys {
	k := &atrest.Keys{}
	for _, e := range enc {
		k.Recipients = append(k.Recipients, e.Recipient())
		k.RecipientStrings = append(k.RecipientStrings, e.Recipient().String())
	}
	for _, d := range dec {
		k.Identities = append(k.Identities, d)
	}
	return k
}

func openKeys(t testing.TB, dir string, keys *atrest.Keys) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{Dir: dir, Now: func() time.Time { return t0 }, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// assertNoMarker fails if any file under dir holds one of the markers.
func assertNoMarker(t testing.TB, dir string, markers ...string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n++
		for _, m := range markers {
			if bytes.Contains(data, []byte(m)) {
				t.Errorf("%s holds %q in the clear", p, m)
			}
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("walk %s: %d files, %v", dir, n, err)
	}
}

func readAll(t testing.TB, s *Store, id string) []byte {
	t.Helper()
	f, err := s.OpenCast(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEncryptedAtRest: with Keys, the cast and the side blob on disk hold no
// plaintext, read back whole (and by range), digest as signed, and recover
// after a torn frame; the search index still finds the words.
func TestEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	k1 := newKey(t)
	s := openKeys(t, dir, keysOf([]*age.X25519Identity{k1}, k1))
	data := cast(`[0.1,"o","MARKER-zebra-4711\r\n"]`, `[0.5,"i","echo secret-typed-9\r"]`)
	rec := ingest(t, s, "s1", "staging", data)
	if rec.Stored != int64(len(data)) {
		t.Fatalf("stored %d, want %d", rec.Stored, len(data))
	}
	raw, err := os.ReadFile(filepath.Join(dir, "blobs", "s1.cast"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte(atrest.Magic)) || bytes.Contains(raw, []byte("MARKER-zebra")) || bytes.Contains(raw, []byte("secret-typed")) {
		t.Fatalf("stored cast is not ciphertext: %q", raw[:min(len(raw), 80)])
	}
	if got := readAll(t, s, "s1"); !bytes.Equal(got, data) {
		t.Fatalf("read back %q, want %q", got, data)
	}
	f, _ := s.OpenCast("s1")
	part := make([]byte, 10)
	if _, err := f.ReadAt(part, 45); err != nil || !bytes.Equal(part, data[45:55]) {
		t.Fatalf("range read %q %v, want %q", part, err, data[45:55])
	}
	f.Close()
	if sum, size, err := s.Digest("s1"); err != nil || sum != rec.Meta.SHA256 || size != rec.Meta.CastBytes {
		t.Fatalf("digest %s %d %v", sum, size, err)
	}
	if err := s.WaitIndexed(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if hits, err := s.Search(ctx, Query{Text: "zebra"}); err != nil || len(hits) != 1 {
		t.Fatalf("search over an encrypted cast: %+v %v", hits, err)
	}
	// No file of the store holds the text (search.db's values are
	// encrypted with search.key, itself encrypted to the recipients).
	assertNoMarker(t, dir, "zebra", "secret-typed")

	// A live recording torn mid-frame by a crash: the torn frame is cut,
	// the stored size is the acknowledged plaintext.
	live := cast(`[0.1,"o","a"]`)
	if _, err := s.Start(ctx, StartRequest{ID: "s2", Owner: "h", Meta: meta("s2", "staging", live)}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Append(ctx, "s2", "h", 0, live)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendBlob(ctx, "s2", "h", 0, []byte("BLOB-MARKER-77")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	fr, _ := atrest.Seal([]byte(`[0.2,"o","more"]`+"\n"), []age.Recipient{k1.Recipient()})
	cf, _ := os.OpenFile(filepath.Join(dir, "blobs", "s2.cast"), os.O_WRONLY|os.O_APPEND, 0)
	cf.Write(fr[:len(fr)/2])
	cf.Close()
	braw, _ := os.ReadFile(filepath.Join(dir, "blobs", "s2.blob"))
	if bytes.Contains(braw, []byte("BLOB-MARKER")) || !bytes.HasPrefix(braw, []byte(atrest.Magic)) {
		t.Fatalf("side blob is not ciphertext")
	}
	s = openKeys(t, dir, keysOf([]*age.X25519Identity{k1}, k1))
	if got, err := s.Start(ctx, StartRequest{ID: "s2", Owner: "h"}); err != nil || got != n {
		t.Fatalf("stored after crash = %d (%v), want %d", got, err, n)
	}
	if got := s.BlobStored("s2"); got != int64(len("BLOB-MARKER-77")) {
		t.Fatalf("blob stored after restart = %d", got)
	}
	if _, err := s.Finish(ctx, FinishRequest{ID: "s2", Owner: "h", Meta: meta("s2", "staging", live)}); err == nil {
		t.Fatal("finish without the blob in the metadata accepted") // the blob is there: the digest of "no blob" must not match
	}
}

// TestEncryptionRotation: a recording made with {k1}, then the keys rotated
// to {k1,k2} with both identities: both read; the new one reads with k2
// alone; the old file's bytes are unchanged by the rotation.
func TestEncryptionRotation(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := newKey(t), newKey(t)
	s := openKeys(t, dir, keysOf([]*age.X25519Identity{k1}, k1))
	a := cast(`[0.1,"o","recording-A"]`)
	ingest(t, s, "a", "staging", a)
	before, _ := os.ReadFile(filepath.Join(dir, "blobs", "a.cast"))
	s.Close()

	s = openKeys(t, dir, keysOf([]*age.X25519Identity{k1, k2}, k1, k2))
	b := cast(`[0.1,"o","recording-B"]`)
	ingest(t, s, "b", "staging", b)
	if got := readAll(t, s, "a"); !bytes.Equal(got, a) {
		t.Fatalf("A after rotation: %q", got)
	}
	if got := readAll(t, s, "b"); !bytes.Equal(got, b) {
		t.Fatalf("B: %q", got)
	}
	s.Close()
	after, _ := os.ReadFile(filepath.Join(dir, "blobs", "a.cast"))
	if !bytes.Equal(before, after) {
		t.Fatal("A was rewritten by the rotation")
	}

	s = openKeys(t, dir, keysOf([]*age.X25519Identity{k2}, k2))
	if got := readAll(t, s, "b"); !bytes.Equal(got, b) {
		t.Fatalf("B with k2 alone: %q", got)
	}
	// A needs k1: a clear error, not a crash, and nothing deleted.
	f, err := s.OpenCast("a")
	if err == nil {
		_, err = io.ReadAll(f)
		f.Close()
	}
	if !errors.Is(err, atrest.ErrNoIdentity) {
		t.Fatalf("A without k1: %v, want ErrNoIdentity", err)
	}
	if _, _, err := s.Digest("a"); !errors.Is(err, atrest.ErrNoIdentity) {
		t.Fatalf("digest of A without k1: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "blobs", "a.cast")); !bytes.Equal(got, before) {
		t.Fatal("A changed after a failed read")
	}
}

// benchStore is a store without fsync or indexing, holding a started
// recording "bench".
func benchStore(b *testing.B, keys *atrest.Keys) (*Store, context.Context) {
	s, err := Open(context.Background(), Config{Dir: b.TempDir(), InsecureSkipSync: true, Keys: keys,
		IndexingGate: make(chan struct{})})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if _, err := s.Start(ctx, StartRequest{ID: "bench", Owner: "h", Meta: meta("bench", "staging", nil)}); err != nil {
		b.Fatal(err)
	}
	return s, ctx
}

// BenchmarkAppendAtRest measures what encryption at rest costs a chunk of
// ingest and a whole read back: plain and encrypted side by side (no fsync,
// so that the CPU cost shows). 16 KiB chunks of lines, as agents ship.
func BenchmarkAppendAtRest(b *testing.B) {
	k := newKey(b)
	line := []byte(`[1.234567,"o","total 48\r\ndrwxr-xr-x  2 root root 4096 Nov 21 10:00 bin\r\n"]` + "\n")
	chunk := bytes.Repeat(line, 16<<10/len(line))
	for _, mode := range []struct {
		name string
		keys *atrest.Keys
	}{{"plain", nil}, {"encrypted", keysOf([]*age.X25519Identity{k}, k)}} {
		b.Run("append/"+mode.name, func(b *testing.B) {
			s, ctx := benchStore(b, mode.keys)
			var off int64
			var err error
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for b.Loop() {
				if off, err = s.Append(ctx, "bench", "h", off, chunk); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			fi, _ := os.Stat(filepath.Join(s.blobDir, "bench.cast"))
			b.ReportMetric(float64(fi.Size())/float64(off), "disk/plain")
		})
		b.Run("read/"+mode.name, func(b *testing.B) {
			s, ctx := benchStore(b, mode.keys)
			var off int64
			var err error
			for range 256 { // a 4 MiB cast
				if off, err = s.Append(ctx, "bench", "h", off, chunk); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(off)
			for b.Loop() {
				f, err := s.OpenCast("bench")
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, f); err != nil || n != off {
					b.Fatal(n, err)
				}
				f.Close()
			}
		})
	}
}
