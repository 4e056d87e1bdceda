package recorder_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/atrest"
)

// sealedSpool opens a spool in dir whose recordings are sealed to a new
// identity, which it returns.
func sealedSpool(t *testing.T, dir string) (*recorder.Spool, *age.X25519Identity) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	s, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{
		Dir: dir, FlushInterval: time.Hour, Now: newFakeClock(time.Millisecond).Now,
		Recipients: func() []age.Recipient { return []age.Recipient{id.Recipient()} },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, id
}

// openSealed decrypts a sealed cast with id.
func openSealed(t *testing.T, path string, id age.Identity) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	x, err := atrest.NewFile(f, []age.Identity{id})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	b, err := io.ReadAll(x)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertNoMarker fails if any file under dir holds marker as is,
// JSON-escaped or hex.
func assertNoMarker(t *testing.T, dir, marker string) {
	t.Helper()
	js, _ := json.Marshal(marker)
	forms := [][]byte{[]byte(marker), js[1 : len(js)-1], []byte(hex.EncodeToString([]byte(marker)))}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, f := range forms {
			if bytes.Contains(b, f) {
				t.Errorf("%s holds the session text %q", p, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// crashCopy copies recording id's files from dir (the spool still open:
// what a kill -9 leaves is what is in the files now), each through edit
// (nil: as is), opens a spool on the copy (which repairs it) and returns
// its directory and the one entry it lists.
func crashCopy(t *testing.T, dir, id string, edit func(name string, b []byte) []byte) (string, recorder.Entry) {
	t.Helper()
	crashed := t.TempDir()
	for _, name := range []string{id + ".cast", id + ".cast.state", id + ".json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			b = edit(name, b)
		}
		if err := os.WriteFile(filepath.Join(crashed, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{Dir: crashed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	es, err := s.List(context.Background())
	if err != nil || len(es) != 1 {
		t.Fatalf("list of the repaired spool: %+v %v", es, err)
	}
	return crashed, es[0]
}

// TestSealedSpool: a sealed recording leaves no session text in the spool;
// its frames decrypt to a cast players read, padded to 64-byte blocks,
// whose digest and size are the metadata's.
func TestSealedSpool(t *testing.T) {
	dir := t.TempDir()
	s, id := sealedSpool(t, dir)
	defer s.Close()
	r, err := s.Create(context.Background(), testMetadata("sealed-1"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	const marker = "SEALED-MARKER-7f3a"
	for range 3 {
		if err := r.Output([]byte(marker + " line\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	_ = r.Output([]byte("binary \xff\xfe " + marker + "\r\n"))
	m, err := r.Close(context.Background(), recorder.EndInfo{})
	if err != nil {
		t.Fatal(err)
	}
	assertNoMarker(t, dir, marker)
	plain := openSealed(t, filepath.Join(dir, "sealed-1.cast"), id)
	if got := sha(plain); got != m.SHA256 || int64(len(plain)) != m.CastBytes {
		t.Fatalf("metadata digest %s/%d, plaintext %s/%d", m.SHA256, m.CastBytes, got, len(plain))
	}
	if len(plain)%64 != 0 {
		t.Errorf("plaintext of %d bytes: frames must end on 64-byte blocks", len(plain))
	}
	rd, err := recorder.NewReader(bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	outs := 0
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("padded cast does not read: %v", err)
		}
		if e.Code == recorder.CodeOutput && strings.Contains(e.Data, marker) {
			outs++
		}
	}
	if outs != 4 {
		t.Errorf("%d output events with the marker, want 4", outs)
	}
	if !m.Complete || m.Blob != nil {
		t.Errorf("complete %v, blob %+v: a sealed cast keeps binary output in the cast", m.Complete, m.Blob)
	}
}

// TestSealedSpoolCrash: the files a kill -9 leaves (the last frame torn,
// output never flushed) are repaired without the identity: the frames up
// to the last state record stay, and the digest resumed from the state is
// that of their plaintext.
func TestSealedSpoolCrash(t *testing.T) {
	dir := t.TempDir()
	s, id := sealedSpool(t, dir)
	r, err := s.Create(context.Background(), testMetadata("sealed-2"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Output([]byte("kept one\r\n"))
	_ = r.Flush()
	_ = r.Output([]byte("kept two\r\n"))
	_ = r.Commit()
	_ = r.Output([]byte("never flushed\r\n"))
	// Tear a frame at the end as a write cut by the crash would.
	crashed, e := crashCopy(t, dir, "sealed-2", func(name string, b []byte) []byte {
		if name == "sealed-2.cast" {
			b = append(b, 0, 0, 1, 0, 0, 0, 0, 64, 'a', 'g', 'e')
		}
		return b
	})
	_ = s.Close()
	m := e.Metadata
	if !m.Finished || m.Complete || !strings.Contains(m.Incomplete, "agent stopped") {
		t.Fatalf("repaired metadata: %+v", m)
	}
	plain := openSealed(t, filepath.Join(crashed, "sealed-2.cast"), id)
	if got := sha(plain); got != m.SHA256 || int64(len(plain)) != m.CastBytes {
		t.Fatalf("repaired digest %s/%d, plaintext %s/%d", m.SHA256, m.CastBytes, got, len(plain))
	}
	if !bytes.Contains(plain, []byte("kept two")) || bytes.Contains(plain, []byte("never flushed")) {
		t.Errorf("repaired plaintext:\n%s", plain)
	}
	if m.BytesOut != int64(len("kept one\r\nkept two\r\n")) {
		t.Errorf("bytes out %d", m.BytesOut)
	}
}

// TestSealedSpoolTornState: a state record a crash cut, or one whose
// frame is missing, does not count: the repair falls back to the last
// record that matches a whole frame.
func TestSealedSpoolTornState(t *testing.T) {
	dir := t.TempDir()
	s, id := sealedSpool(t, dir)
	defer s.Close()
	r, err := s.Create(context.Background(), testMetadata("sealed-3"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Output([]byte("first\r\n"))
	_ = r.Flush()
	cast, err := os.ReadFile(filepath.Join(dir, "sealed-3.cast"))
	if err != nil {
		t.Fatal(err)
	}
	state, err := os.ReadFile(filepath.Join(dir, "sealed-3.cast.state"))
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Output([]byte("second\r\n"))
	_ = r.Flush()
	// The second frame reached the file, its record did not (half of it).
	crashed, e := crashCopy(t, dir, "sealed-3", func(name string, b []byte) []byte {
		if name == "sealed-3.cast.state" {
			return append(state, make([]byte, 20)...)
		}
		return b
	})
	plain := openSealed(t, filepath.Join(crashed, "sealed-3.cast"), id)
	if sha(plain) != e.SHA256 || bytes.Contains(plain, []byte("second")) || !bytes.Contains(plain, []byte("first")) {
		t.Fatalf("digest %s vs %s; plaintext:\n%s", e.SHA256, sha(plain), plain)
	}
	if fi, _ := os.Stat(filepath.Join(crashed, "sealed-3.cast")); fi.Size() != int64(len(cast)) {
		t.Errorf("cast cut to %d bytes, want %d (the first frame)", fi.Size(), len(cast))
	}
}

// TestSealedSpoolCorruptState: a damaged state record or frame header in
// the middle (a disk error, an edit) is not trusted: the repair keeps
// what comes before it, says why, and its digest is that of what it kept.
func TestSealedSpoolCorruptState(t *testing.T) {
	for _, damage := range []string{"state record", "frame header"} {
		t.Run(strings.ReplaceAll(damage, " ", "-"), func(t *testing.T) {
			dir := t.TempDir()
			s, id := sealedSpool(t, dir)
			r, err := s.Create(context.Background(), testMetadata("sealed-4"), testHeader)
			if err != nil {
				t.Fatal(err)
			}
			var frameEnd []int64 // file size after each flush
			for _, l := range []string{"one", "two", "three"} {
				_ = r.Output([]byte(l + "\r\n"))
				_ = r.Flush()
				fi, _ := os.Stat(filepath.Join(dir, "sealed-4.cast"))
				frameEnd = append(frameEnd, fi.Size())
			}
			crashed, e := crashCopy(t, dir, "sealed-4", func(name string, b []byte) []byte {
				switch {
				case damage == "state record" && name == "sealed-4.cast.state":
					b[len(b)-20] ^= 0xff // in the last record ("three"'s): what is before it stays
				case damage == "frame header" && name == "sealed-4.cast":
					b[frameEnd[1]] = 0xff // the length in the header of "three"'s frame
				}
				return b
			})
			_ = s.Close()
			if !e.Finished || !strings.Contains(e.Incomplete, "corrupt") {
				t.Fatalf("repaired: %+v", e)
			}
			plain := openSealed(t, filepath.Join(crashed, "sealed-4.cast"), id)
			if sha(plain) != e.SHA256 || int64(len(plain)) != e.CastBytes || !bytes.Contains(plain, []byte("two")) || bytes.Contains(plain, []byte("three")) {
				t.Fatalf("digest %s/%d vs %s/%d; kept:\n%s", e.SHA256, e.CastBytes, sha(plain), len(plain), plain)
			}
		})
	}
}

// BenchmarkSealedRecordingOutput is BenchmarkRecordingOutput into a
// sealed spool: one age frame (an X25519 exchange) per 32 KiB of cast.
func BenchmarkSealedRecordingOutput(b *testing.B) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	benchRecording(b, recorder.SpoolConfig{Recipients: func() []age.Recipient { return []age.Recipient{id.Recipient()} }})
}
