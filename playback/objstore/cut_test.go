package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/sshward/sshward/playback/objstore"
	"github.com/sshward/sshward/playback/objstore/s3test"
)

// cutProxy forwards TCP connections to target and cuts each one once n
// bytes of it went upstream (a network failure in the middle of a
// request body). It stops with the test.
func cutProxy(t *testing.T, target string, n int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(c, u)
				io.CopyN(u, c, n)
			})
		}
	})
	return ln.Addr().String()
}

// TestCutUploadStoresNothingPartial: the connection to the S3 server is
// cut in the middle of a PUT's body, at several points, for a new object
// and for one that already exists (two CA replicas archive the same audit
// segment; a playback replica resends a cast). The object is never the
// part that arrived: it is absent or the old one, whole. versitygw, like
// other S3-compatible servers, stores what arrived before a cut unless the
// request names its digest (Content-MD5): without it this test found a
// 10,674-byte object for a 20,400-byte PUT.
func TestCutUploadStoresNothingPartial(t *testing.T) {
	srv := s3test.Start(t)
	direct := open(t, srv, "")
	ctx := context.Background()
	host := strings.TrimPrefix(srv.Endpoint, "https://")
	data := bytes.Repeat([]byte(`{"seq":1,"type":"cert.issue","actor":"alice"}`+"\n"), 450)
	old := bytes.Repeat([]byte("the whole old object\n"), 1000)
	if err := direct.Put(ctx, "audit/existing.jsonl", bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int64{4000, 9000, 14000, 19000} {
		b, err := objstore.Open(ctx, objstore.Config{Endpoint: "https://" + cutProxy(t, host, cut), Bucket: srv.Bucket,
			AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, HTTPClient: srv.HTTPClient})
		if err != nil {
			t.Fatalf("open through the proxy: %v", err)
		}
		if err := b.Put(ctx, "audit/new.jsonl", bytes.NewReader(data), int64(len(data))); err == nil {
			t.Fatalf("cut after %d bytes: Put of %d bytes succeeded", cut, len(data))
		}
		if _, err := direct.Size(ctx, "audit/new.jsonl"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("cut after %d bytes: a new object is there after a failed Put (%v)", cut, err)
		}
		if err := b.Put(ctx, "audit/existing.jsonl", bytes.NewReader(data), int64(len(data))); err == nil {
			t.Fatalf("cut after %d bytes: overwriting Put succeeded", cut)
		}
		if got := get(t, direct, "audit/existing.jsonl", 0, -1); !bytes.Equal(got, old) {
			t.Fatalf("cut after %d bytes: the existing object is now %d bytes, want the old %d", cut, len(got), len(old))
		}
	}
	if err := direct.Put(ctx, "audit/new.jsonl", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if got := get(t, direct, "audit/new.jsonl", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("whole Put read back %d bytes, want %d", len(got), len(data))
	}
}
