package objstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/playback/objstore"
	"github.com/sshward/sshward/playback/objstore/s3test"
)

func open(t *testing.T, srv *s3test.Server, prefix string) *objstore.Bucket {
	t.Helper()
	b, err := objstore.Open(context.Background(), objstore.Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: prefix,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: objstore.MinPartSize, HTTPClient: srv.HTTPClient})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func get(t *testing.T, b *objstore.Bucket, key string, off, n int64) []byte {
	t.Helper()
	rc, err := b.Get(context.Background(), key, off, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestObjectsOnARealS3Server: small objects in one PUT, a 12 MiB one as a
// multipart upload of 5 MiB parts (what S3 servers accept), byte ranges,
// listing under a prefix, delete, and ErrNotFound; against versitygw over
// HTTPS on loopback. The bytes on the server's disk are the bytes put.
func TestObjectsOnARealS3Server(t *testing.T) {
	srv := s3test.Start(t)
	b := open(t, srv, "sshward/")
	ctx := context.Background()

	small := []byte(`{"version": 2, "width": 80, "height": 24}` + "\n" + `[0.5, "o", "hello\r\n"]` + "\n")
	if err := b.Put(ctx, "casts/s1.cast", bytes.NewReader(small), int64(len(small))); err != nil {
		t.Fatal(err)
	}
	big := random(t, 12<<20+12345) // three parts: 5 MiB, 5 MiB, the rest
	if err := b.Put(ctx, "casts/s2.cast", bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatal(err)
	}
	if got := get(t, b, "casts/s1.cast", 0, -1); !bytes.Equal(got, small) {
		t.Errorf("small object read back as %q", got)
	}
	if got := get(t, b, "casts/s2.cast", 0, -1); !bytes.Equal(got, big) {
		t.Errorf("multipart object read back differs (%d bytes, want %d)", len(got), len(big))
	}
	// A range across the first part boundary, and the tail.
	if got := get(t, b, "casts/s2.cast", 5<<20-10, 20); !bytes.Equal(got, big[5<<20-10:5<<20+10]) {
		t.Errorf("range across parts differs")
	}
	if got := get(t, b, "casts/s2.cast", int64(len(big))-100, -1); !bytes.Equal(got, big[len(big)-100:]) {
		t.Errorf("tail differs")
	}
	if size, err := b.Size(ctx, "casts/s2.cast"); err != nil || size != int64(len(big)) {
		t.Errorf("Size = %d, %v", size, err)
	}
	onDisk, err := os.ReadFile(filepath.Join(srv.Dir, srv.Bucket, "sshward", "casts", "s2.cast"))
	if err != nil || !bytes.Equal(onDisk, big) {
		t.Errorf("the server's file differs from what was put (%v)", err)
	}

	var keys []string
	for o, err := range b.List(ctx, "casts/") {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, o.Key)
	}
	if strings.Join(keys, " ") != "casts/s1.cast casts/s2.cast" {
		t.Errorf("List = %q", keys)
	}
	if err := b.Delete(ctx, "casts/s1.cast"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "casts/s1.cast", 0, -1); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	if _, err := b.Size(ctx, "casts/none.cast"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Size of a missing object: %v, want ErrNotFound", err)
	}
	if err := b.Delete(ctx, "casts/none.cast"); err != nil {
		t.Errorf("Delete of a missing object: %v", err)
	}
}

// failingReader gives n bytes, then fails, as a disk read error would in
// the middle of an upload.
type failingReader struct {
	r io.Reader
	n int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk read error")
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// TestFailedUploadLeavesNothing: a multipart upload whose source fails
// after the first part, and one whose server is killed mid-way, leave no
// object and no pending multipart upload (aborted), so a half recording is
// never mistaken for one and nothing is left to pay for.
func TestFailedUploadLeavesNothing(t *testing.T) {
	srv := s3test.Start(t)
	b := open(t, srv, "")
	ctx := context.Background()
	data := random(t, 11<<20)
	err := b.Put(ctx, "casts/broken.cast", &failingReader{r: bytes.NewReader(data), n: 6 << 20}, int64(len(data)))
	if err == nil || !strings.Contains(err.Error(), "disk read error") {
		t.Fatalf("Put with a failing source: %v", err)
	}
	if _, err := b.Size(ctx, "casts/broken.cast"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("object after a failed upload: %v, want ErrNotFound", err)
	}
	if n, err := b.PendingUploads(ctx, ""); err != nil || n != 0 {
		t.Errorf("pending multipart uploads after a failed Put: %d (%v), want 0", n, err)
	}

	// The server is down: a clear error naming the endpoint, no secret in it.
	srv.Kill()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = b.Put(cctx, "casts/down.cast", bytes.NewReader(data[:1000]), 1000)
	if err == nil || !strings.Contains(err.Error(), srv.Endpoint) {
		t.Fatalf("Put to a dead server: %v", err)
	}
	if strings.Contains(err.Error(), srv.SecretKey) {
		t.Fatalf("the error shows the secret key: %v", err)
	}
	srv.Restart()
	if err := b.Put(ctx, "casts/down.cast", bytes.NewReader(data[:1000]), 1000); err != nil {
		t.Fatalf("Put after the server came back: %v", err)
	}
}

// TestOpenRefuses: a wrong secret key, a missing bucket and a bad config
// are refused at Open with a clear error, never with the secret in it.
func TestOpenRefuses(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	good := objstore.Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, HTTPClient: srv.HTTPClient}
	for _, tc := range []struct {
		name   string
		change func(*objstore.Config)
		want   string
	}{
		{"wrong secret", func(c *objstore.Config) { c.SecretKey = "not-the-secret-key-of-this-server" }, "open bucket"},
		{"missing bucket", func(c *objstore.Config) { c.Bucket = "nope" }, "not found"},
		{"no endpoint", func(c *objstore.Config) { c.Endpoint = "" }, "endpoint is required"},
		{"small parts", func(c *objstore.Config) { c.PartSize = 1 << 20 }, "below S3's minimum"},
		{"no keys", func(c *objstore.Config) { c.AccessKey = "" }, "access key and secret key are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			_, err := objstore.Open(ctx, cfg)
			t.Logf("refused: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want an error with %q", err, tc.want)
			}
			if cfg.SecretKey != "" && strings.Contains(err.Error(), cfg.SecretKey) {
				t.Fatalf("the error shows the secret key: %v", err)
			}
		})
	}
}
