package recorder_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// blobRecord writes data through a Writer with a side blob, split at the
// given sizes, and returns the cast and blob bytes.
func blobRecord(t testing.TB, data, splits []byte, crlf bool, keep int64, sealEvery int) (cast, blob []byte, info *recorder.BlobInfo) {
	t.Helper()
	var cb, bb bytes.Buffer
	clock := newFakeClock(time.Millisecond)
	w, err := recorder.NewWriter(&cb, testHeader, time.Time{}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	w.SetOutputCRLF(crlf)
	w.SetBlob(&bb, keep, crlf)
	for i := 0; len(data) > 0; i++ {
		n := len(data)
		if len(splits) > 0 {
			n = min(n, int(splits[i%len(splits)])+1)
		}
		if err := w.Output(data[:n]); err != nil {
			t.Fatal(err)
		}
		if sealEvery > 0 && i%sealEvery == 0 {
			if err := w.SealBlob(); err != nil {
				t.Fatal(err)
			}
		}
		data = data[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return cb.Bytes(), bb.Bytes(), w.BlobInfo()
}

func exactOf(t testing.TB, m recorder.Metadata, cast, blob []byte) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	var br *bytes.Reader
	if blob != nil {
		br = bytes.NewReader(blob)
	}
	var ra interface {
		ReadAt([]byte, int64) (int, error)
	}
	if br != nil {
		ra = br
	}
	n, err := recorder.ExactOutputBytes(m, bytes.NewReader(cast), ra, &out)
	if err == nil && n != int64(out.Len()) {
		t.Fatalf("ExactOutputBytes counted %d bytes, wrote %d", n, out.Len())
	}
	return out.Bytes(), err
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// checkBlobCast checks what every player relies on: the cast parses, holds
// only valid UTF-8, and each blob reference is followed by its preview.
func checkBlobCast(t testing.TB, cast []byte) (refs []recorder.BlobRef) {
	t.Helper()
	_, evs := recordertest.MustParseCast(t, cast)
	for i, e := range evs {
		if e.Code != recorder.CodeMarker {
			continue
		}
		ref, ok := recorder.ParseBlobRef(e.Data)
		if !ok {
			continue
		}
		if i+1 >= len(evs) || evs[i+1].Code != recorder.CodeOutput || len(evs[i+1].Data) != ref.Preview ||
			!strings.HasPrefix(evs[i+1].Data, "[binary output: ") {
			t.Fatalf("reference %q is not followed by its preview", e.Data)
		}
		refs = append(refs, ref)
	}
	return refs
}

// FuzzBlobRoundTrip: any bytes (text, binary, controls, split runes),
// split arbitrarily across Output calls, sealed at arbitrary points, with
// and without a terminal's CR LF rendering, come back exactly from the
// cast and its blob; the cast stays a valid asciicast whose references
// each carry their preview.
func FuzzBlobRoundTrip(f *testing.F) {
	f.Add([]byte("héllo\n\x00\x01\x02 wörld\xff\xfe\r\n日本"), []byte{1, 2, 3}, true, uint8(0))
	f.Add([]byte("a\xff\xfeb\xe6\x97\n\r\n\r\r\n"), []byte{0}, true, uint8(1))
	f.Add(bytes.Repeat([]byte("\x1f\x8b\x08\x00text text text text text text text text text text text text text text\n"), 20), []byte{7, 200}, false, uint8(3))
	f.Add([]byte("\r"), []byte{}, true, uint8(0))
	f.Fuzz(func(t *testing.T, data, splits []byte, crlf bool, seal uint8) {
		cast, blob, info := blobRecord(t, data, splits, crlf, 0, int(seal%5))
		if !bytes.Contains(cast, []byte("\n")) {
			t.Fatal("no cast")
		}
		refs := checkBlobCast(t, cast)
		m := recorder.Metadata{Blob: info}
		if crlf {
			m.OutputNewlines = recorder.NewlinesCRLF
		}
		got, err := exactOf(t, m, cast, blob)
		if err != nil {
			t.Fatalf("exact output: %v", err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("round trip\n got %q\nwant %q\ncast %s", got, data, cast)
		}
		var total int64
		for _, r := range refs {
			total += r.Length
		}
		if total != int64(len(blob)) || (info == nil) != (len(blob) == 0) {
			t.Fatalf("references cover %d bytes, blob has %d (info %+v)", total, len(blob), info)
		}
		if info != nil && (info.Bytes != int64(len(blob)) || info.SHA256 != sha(blob) || info.StreamSHA256 != info.SHA256 || info.Cut) {
			t.Fatalf("blob info %+v does not describe the blob (%d bytes, %s)", info, len(blob), sha(blob))
		}
	})
}

// FuzzBlobRef: a label parses only if it is exactly what Label writes for
// the reference it parsed to (one spelling per reference: no "+1",
// "01", extra fields or spaces that a reader might take differently).
func FuzzBlobRef(f *testing.F) {
	f.Add("sshward-blob offset=0 length=5 kept=5 preview=40")
	f.Add("sshward-blob offset=01 length=5 kept=5 preview=40")
	f.Add("sshward-blob offset=0 length=5 kept=6 preview=40")
	f.Add("sshward-blob offset=4611686018427387904 length=1 kept=0 preview=1")
	f.Fuzz(func(t *testing.T, label string) {
		ref, ok := recorder.ParseBlobRef(label)
		if !ok {
			return
		}
		if ref.Label() != label {
			t.Fatalf("%q parsed to %+v, which is written %q", label, ref, ref.Label())
		}
		if ref.Kept > ref.Length || ref.Length <= 0 || ref.Offset < 0 || ref.Offset+ref.Length < 0 {
			t.Fatalf("%q parsed to an impossible reference %+v", label, ref)
		}
	})
}

// TestBlobOtherMarkersCannotPoseAsReferences: a marker label from
// elsewhere (an sftp path, a request reason) that looks like a blob
// reference is renamed, so exact output never reads blob bytes for it.
func TestBlobOtherMarkersCannotPoseAsReferences(t *testing.T) {
	var cb, bb bytes.Buffer
	w, err := recorder.NewWriter(&cb, testHeader, time.Time{}, newFakeClock(time.Millisecond).Now)
	if err != nil {
		t.Fatal(err)
	}
	w.SetBlob(&bb, 0, true)
	forged := recorder.BlobRef{Offset: 0, Length: 3, Kept: 3, Preview: 2}.Label()
	if err := w.Marker(forged); err != nil {
		t.Fatal(err)
	}
	if err := w.Output([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if refs := checkBlobCast(t, cb.Bytes()); len(refs) != 0 {
		t.Fatalf("a marker from elsewhere became a reference: %+v", refs)
	}
	got, err := exactOf(t, recorder.Metadata{}, cb.Bytes(), []byte("xyz"))
	if err != nil || string(got) != "ab" {
		t.Fatalf("exact output %q, %v; want \"ab\"", got, err)
	}
}

// TestBlobStoredBytesPerByte: random binary output and /dev/zero cost at
// most 1.1 stored bytes (cast + blob) per byte sent, with the reads a
// busy agent makes (32 KiB) and a commit after each (a closed tier), and
// come back exactly.
func TestBlobStoredBytesPerByte(t *testing.T) {
	random := make([]byte, 4<<20)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"random", random},
		{"zeros", make([]byte, 4<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := recordertest.MustSpool(t, recorder.SpoolConfig{})
			m := testMetadata("bpb-" + tc.name)
			m.Kind, m.OutputNewlines = recorder.KindExec, recorder.NewlinesCRLF
			r, err := s.Create(context.Background(), m, testHeader)
			if err != nil {
				t.Fatal(err)
			}
			for p := tc.data; len(p) > 0; p = p[min(len(p), 32<<10):] {
				if err := r.Output(p[:min(len(p), 32<<10)]); err != nil {
					t.Fatal(err)
				}
				if err := r.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			meta, err := r.Close(context.Background(), recorder.EndInfo{})
			if err != nil {
				t.Fatal(err)
			}
			if meta.Blob == nil {
				t.Fatal("no blob recorded")
			}
			ratio := float64(meta.CastBytes+meta.Blob.Bytes) / float64(len(tc.data))
			t.Logf("%s: %d bytes sent, cast %d + blob %d: %.4f stored bytes per byte", tc.name, len(tc.data), meta.CastBytes, meta.Blob.Bytes, ratio)
			if ratio > 1.1 {
				t.Errorf("%.3f stored bytes per byte, want <= 1.1", ratio)
			}
			cast, _ := os.ReadFile(r.CastPath())
			blob, _ := os.ReadFile(recorder.BlobPath(r.CastPath()))
			// Leading bytes that happen to be text stay in the cast.
			if meta.Blob.SHA256 != sha(blob) || meta.Blob.Bytes != int64(len(blob)) || meta.Blob.StreamSHA256 != meta.Blob.SHA256 ||
				!bytes.HasSuffix(tc.data, blob) || len(blob) < len(tc.data)-100 {
				t.Errorf("metadata blob %+v does not describe the blob file or the stream", meta.Blob)
			}
			got, err := exactOf(t, *meta, cast, blob)
			if err != nil || sha(got) != sha(tc.data) {
				t.Fatalf("exact output: %v, %d bytes, sha %s, want %s", err, len(got), sha(got), sha(tc.data))
			}
		})
	}
}

// TestBlobKeepsFirstBytesAndDigestOfAll: a tier cap of 1 MiB keeps the
// first MiB of 3 MiB of binary output in the blob, records length and
// digest of all 3 MiB, and exact output refuses rather than pass the cut
// output off as whole.
func TestBlobKeepsFirstBytesAndDigestOfAll(t *testing.T) {
	data := make([]byte, 3<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	data[0] = 0xff // binary from the first byte: all of it goes to the blob
	s := recordertest.MustSpool(t, recorder.SpoolConfig{})
	m := testMetadata("cap-1")
	m.Kind, m.OutputNewlines, m.BulkKeepBytes = recorder.KindExec, recorder.NewlinesCRLF, 1<<20
	r, err := s.Create(context.Background(), m, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Output([]byte("before\n"))
	for p := data; len(p) > 0; p = p[min(len(p), 100_000):] {
		if err := r.Output(p[:min(len(p), 100_000)]); err != nil {
			t.Fatal(err)
		}
	}
	meta, err := r.Close(context.Background(), recorder.EndInfo{})
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := os.ReadFile(recorder.BlobPath(r.CastPath()))
	want := recorder.BlobInfo{Bytes: 1 << 20, SHA256: sha(data[:1<<20]), StreamBytes: 3 << 20, StreamSHA256: sha(data), Cut: true}
	if meta.Blob == nil || *meta.Blob != want {
		t.Fatalf("blob info %+v, want %+v", meta.Blob, want)
	}
	if !bytes.Equal(blob, data[:1<<20]) {
		t.Fatalf("the blob file holds %d bytes, not the first MiB", len(blob))
	}
	cast, _ := os.ReadFile(r.CastPath())
	if !bytes.Contains(cast, []byte("not kept (tier bulk_output cap)")) {
		t.Error("no preview says bytes were not kept")
	}
	if _, err := exactOf(t, *meta, cast, blob); !errors.Is(err, recorder.ErrBlobCut) {
		t.Fatalf("exact output of a cut recording: %v, want ErrBlobCut", err)
	}
}

// TestBlobTruncatedIsRefused: a blob shorter than the cast references
// fails exact output; it never yields fewer bytes as if they were all.
func TestBlobTruncatedIsRefused(t *testing.T) {
	data := bytes.Repeat([]byte{0xff, 0x00, 0x80}, 1000)
	cast, blob, info := blobRecord(t, data, nil, true, 0, 0)
	_, err := exactOf(t, recorder.Metadata{Blob: info, OutputNewlines: recorder.NewlinesCRLF}, cast, blob[:len(blob)-1])
	if !errors.Is(err, recorder.ErrBlobShort) {
		t.Fatalf("truncated blob: %v, want ErrBlobShort", err)
	}
	if _, err := exactOf(t, recorder.Metadata{Blob: info}, cast, nil); !errors.Is(err, recorder.ErrBlobShort) {
		t.Fatalf("missing blob: %v, want ErrBlobShort", err)
	}
}

// TestBlobSurvivesCrash: blob bytes that reached the file before a crash,
// whose reference was still in the cast's buffer, are kept and described
// by the repair, and exact output ends with them. The crash is the live
// files copied, as a kill -9 leaves them, and a spool opened on the copy.
func TestBlobSurvivesCrash(t *testing.T) {
	s, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{Dir: t.TempDir(), FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	m := testMetadata("crash-blob")
	m.Kind, m.OutputNewlines = recorder.KindExec, recorder.NewlinesCRLF
	r, err := s.Create(context.Background(), m, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	first := append([]byte("text\n"), bytes.Repeat([]byte{0, 0xff}, 5000)...)
	_ = r.Output(first)
	if err := r.Commit(); err != nil {
		t.Fatal(err)
	}
	// More binary bytes, more than the blob's buffer, so they pass to the
	// file, while their reference stays in memory.
	tail := bytes.Repeat([]byte{1, 0xfe}, 100_000)
	_ = r.Output(tail)
	dir := t.TempDir()
	for _, name := range []string{"crash-blob.cast", "crash-blob.json", "crash-blob.blob"} {
		data, err := os.ReadFile(filepath.Join(s.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	recordertest.MustSpool(t, recorder.SpoolConfig{Dir: dir})
	castPath := filepath.Join(dir, "crash-blob.cast")
	meta := recordertest.MustReadMetadata(t, filepath.Join(dir, "crash-blob.json"))
	blob, _ := os.ReadFile(recorder.BlobPath(castPath))
	if meta.Blob == nil || meta.Blob.Bytes != int64(len(blob)) || meta.Blob.SHA256 != sha(blob) || meta.Complete || !meta.Finished {
		t.Fatalf("repaired metadata %+v blob %+v for a %d-byte blob", meta, meta.Blob, len(blob))
	}
	cast, _ := os.ReadFile(castPath)
	got, err := exactOf(t, meta, cast, blob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(got, first) || len(got) <= len(first)+10000 || !bytes.HasPrefix(tail, got[len(first):]) {
		t.Fatalf("exact output after the crash: %d bytes, want the %d committed ones and a prefix of the rest", len(got), len(first))
	}
}

// TestAsciinemaPlaysBlobCast: Debian's asciinema plays (and cats) a cast
// with blob references: the previews show where the binary output was.
func TestAsciinemaPlaysBlobCast(t *testing.T) {
	recordertest.NeedTool(t, "asciinema", "asciinema")
	s := recordertest.MustSpool(t, recorder.SpoolConfig{})
	m := testMetadata("play-blob")
	m.Kind, m.OutputNewlines = recorder.KindExec, recorder.NewlinesCRLF
	r, err := s.Create(context.Background(), m, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"before ✓\n", "\x1f\x8b\x08\x00\xff\xfe\x00\x00binary", strings.Repeat("after the binary part\n", 4)} {
		if err := r.Output([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Close(context.Background(), recorder.EndInfo{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "asciinema", "play", "-s", "100", r.CastPath()).CombinedOutput()
	if err != nil {
		t.Fatalf("asciinema play: %v\n%s", err, out)
	}
	for _, want := range []string{"before ✓\r\n", "[binary output: 14 bytes, blob offset 0: 1f8b0800 fffe0000 62696e61 7279]\r\n", "after the binary part\r\n"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("asciinema play printed %q, want it to contain %q", out, want)
		}
	}
	if bytes.Contains(out, []byte("Traceback")) {
		t.Errorf("asciinema crashed: %s", out)
	}
	got := recordertest.AsciinemaCat(t, r.CastPath())
	if !bytes.Contains(got, []byte("[binary output: 14 bytes")) {
		t.Errorf("asciinema cat printed %q", got)
	}
}

// TestBlobTextAfterBinaryStaysText: after binary output, a prompt and the
// echo of each typed key (writes of a few bytes of text) are text in the
// cast, not swallowed into the blob: the player shows what came after.
func TestBlobTextAfterBinaryStaysText(t *testing.T) {
	writes := []string{"$ cat photo.jpg\r\n", "\xff\xd8\xff\xe0\x00\x10JFIF", "\x00\x01\xff", "$ ", "l", "s", "\r\n", "a.txt\r\n$ "}
	var data []byte
	var cb, bb bytes.Buffer
	w, err := recorder.NewWriter(&cb, testHeader, time.Time{}, newFakeClock(time.Millisecond).Now)
	if err != nil {
		t.Fatal(err)
	}
	w.SetBlob(&bb, 0, false) // a terminal session
	for _, p := range writes {
		data = append(data, p...)
		if err := w.Output([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if want := "\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\xff"; bb.String() != want {
		t.Errorf("blob %q, want %q", bb.String(), want)
	}
	_, evs := recordertest.MustParseCast(t, cb.Bytes())
	if out := recordertest.Data(evs, recorder.CodeOutput); !strings.HasSuffix(out, "ff]\r\n$ ls\r\na.txt\r\n$ ") {
		t.Errorf("cast output %q: the prompt and the typed keys are not text after the preview", out)
	}
	if got, err := exactOf(t, recorder.Metadata{Blob: w.BlobInfo()}, cb.Bytes(), bb.Bytes()); err != nil || !bytes.Equal(got, data) {
		t.Errorf("exact output %q, %v", got, err)
	}
}

// TestBlobHeldTailStaysInRun: binary output whose last bytes could start
// a secret (redaction holds them back until it knows) keeps every byte
// in the blob. The held bytes come out at Close as their own write; were
// they taken for a write of text (a prompt), they would leave the run
// and the blob stream would miss them: a flaky cut of random downloads.
func TestBlobHeldTailStaysInRun(t *testing.T) {
	for i, tail := range []string{"g", "gh", "ghp_", "AKIA", "-----BEGIN"} {
		data := make([]byte, 64<<10)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		data[0] = 0xff
		copy(data[len(data)-len(tail):], tail)
		s := recordertest.MustSpool(t, recorder.SpoolConfig{})
		m := testMetadata(fmt.Sprintf("held-%d", i))
		m.Kind, m.OutputNewlines = recorder.KindExec, recorder.NewlinesCRLF
		r, err := s.Create(context.Background(), m, testHeader)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Output(data); err != nil {
			t.Fatal(err)
		}
		meta, err := r.Close(context.Background(), recorder.EndInfo{})
		if err != nil {
			t.Fatal(err)
		}
		blob, _ := os.ReadFile(recorder.BlobPath(r.CastPath()))
		if meta.Blob == nil || meta.Blob.StreamBytes != int64(len(data)) || !bytes.Equal(blob, data) {
			t.Errorf("tail %q: blob info %+v, blob file %d bytes; want all %d bytes in the blob", tail, meta.Blob, len(blob), len(data))
		}
	}
}
