package playback_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/objstore"
	"github.com/sshward/sshward/playback/objstore/s3test"
	"github.com/sshward/sshward/playback/store"
)

func openBucket(t testing.TB, srv *s3test.Server) *objstore.Bucket {
	t.Helper()
	b, err := objstore.Open(context.Background(), objstore.Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: "sshward/",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, HTTPClient: srv.HTTPClient})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func objectBytes(t *testing.T, b *objstore.Bucket, key string) ([]byte, error) {
	t.Helper()
	rc, err := b.Get(context.Background(), key, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// TestArchiveToObjectStorage: finished recordings reach a real
// S3-compatible server (versitygw) byte for byte, with their record; while
// the bucket is down they stay local, are served, and are uploaded once it
// is back, without a restart; a fresh replica rebuilds its store from the
// bucket alone (Reindex: digest and signature checked again) and serves the
// same verified recording; a record whose signature was tampered with in
// the bucket is refused by Reindex; retention deletes the objects too.
func TestArchiveToObjectStorage(t *testing.T) {
	s3 := s3test.Start(t)
	bucket := openBucket(t, s3)
	w := newWorld(t)
	w.plaintextOnly(t)
	var offset atomic.Int64 // the server's clock runs ahead by this much (retention, below)
	srv := w.startServer(t, serverOpts{objects: bucket, now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) },
		retention: playback.Retention{ByTier: map[string]time.Duration{"staging": time.Hour}}, sweep: 50 * time.Millisecond})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, srv.url, agentOpts{})
	a.clock.set(time.Now()) // recordings end now: within the 1h retention

	rec := a.create(t, "s-archived", "staging", false)
	writeOutput(t, a, rec, 0, 200)
	closeRec(t, rec)
	cast := w.shipped(t, a, srv.url, "s-archived")
	waitFor(t, "the recording in the bucket", 15*time.Second, func() bool {
		got, err := objectBytes(t, bucket, "records/s-archived.json")
		return err == nil && len(got) > 0
	})
	if got, err := objectBytes(t, bucket, "casts/s-archived.cast"); err != nil || !bytes.Equal(got, cast) {
		t.Fatalf("the archived cast differs from the stored one (%v)", err)
	}

	// The bucket goes away: the next recording is stored, served, pending.
	s3.Kill()
	rec = a.create(t, "s-while-down", "staging", false)
	writeOutput(t, a, rec, 0, 50)
	closeRec(t, rec)
	castDown := w.shipped(t, a, srv.url, "s-while-down")
	waitFor(t, "the upload to fail and wait", 15*time.Second, func() bool {
		st := srv.ArchiveStatus()
		return st.Pending == 1 && st.LastError != ""
	})
	if d := w.detail(t, srv.url, "s-while-down"); d.Integrity != playback.IntegrityVerified {
		t.Fatalf("a recording waiting for the bucket is not served verified: %+v", d.SessionSummary)
	}
	status, body := w.get(t, srv.url+"/healthz", "")
	if status != http.StatusOK || !strings.Contains(string(body), "archive: 1 pending") || strings.Contains(string(body), s3.Endpoint) {
		t.Errorf("/healthz while the bucket is down: %d %q", status, body)
	}
	s3.Restart()
	waitFor(t, "the pending upload once the bucket is back", 20*time.Second, func() bool {
		got, err := objectBytes(t, bucket, "casts/s-while-down.cast")
		st := srv.ArchiveStatus()
		return err == nil && bytes.Equal(got, castDown) && st.Pending == 0
	})
	waitFor(t, "its record", 10*time.Second, func() bool {
		_, err := objectBytes(t, bucket, "records/s-while-down.json")
		return err == nil
	})

	// A record tampered with in the bucket: the signature no longer covers it.
	tampered, _ := objectBytes(t, bucket, "records/s-archived.json")
	bad := bytes.Replace(tampered, []byte(`"identity":"bob"`), []byte(`"identity":"mallory"`), 1)
	if bytes.Equal(bad, tampered) {
		t.Fatalf("record object has no identity to tamper with: %s", tampered)
	}
	forged := bytes.Replace(bad, []byte(`"id":"s-archived"`), []byte(`"id":"s-forged"`), 1)
	if err := bucket.Put(context.Background(), "records/s-forged.json", bytes.NewReader(forged), int64(len(forged))); err != nil {
		t.Fatal(err)
	}
	castBytes, _ := objectBytes(t, bucket, "casts/s-archived.cast")
	bucket.Put(context.Background(), "casts/s-forged.cast", bytes.NewReader(castBytes), int64(len(castBytes)))

	// A fresh replica from the bucket alone.
	fresh, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	res, err := playback.Reindex(context.Background(), fresh, bucket, nil)
	if err != nil || res.Objects != 3 || res.Imported != 2 || res.Refused != 1 {
		t.Fatalf("Reindex: %+v, %v; want 3 objects, 2 imported, the forged one refused", res, err)
	}
	for id, want := range map[string][]byte{"s-archived": cast, "s-while-down": castDown} {
		r, err := fresh.Get(context.Background(), id)
		if err != nil || !r.Finished || r.Meta.Identity != "bob" {
			t.Fatalf("rebuilt %s: %+v %v", id, r, err)
		}
		f, err := fresh.OpenCast(id)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if !bytes.Equal(got, want) {
			t.Errorf("rebuilt cast of %s differs", id)
		}
	}
	if _, err := fresh.Get(context.Background(), "s-forged"); err == nil {
		t.Error("the forged record was imported")
	}
	// Reindex again: everything present, nothing duplicated.
	if res, err := playback.Reindex(context.Background(), fresh, bucket, nil); err != nil || res.Present != 2 || res.Imported != 0 {
		t.Errorf("second Reindex: %+v %v", res, err)
	}

	// Retention: two hours later both recordings expire; their objects
	// go with them (first: else a reindex would bring them back).
	offset.Store(int64(2 * time.Hour))
	waitFor(t, "retention to delete the archived objects", 15*time.Second, func() bool {
		for _, key := range []string{"records/s-archived.json", "casts/s-archived.cast", "records/s-while-down.json", "casts/s-while-down.cast"} {
			if _, err := bucket.Size(context.Background(), key); err == nil {
				return false
			}
		}
		return true
	})
	if _, err := srv.store.Get(context.Background(), "s-archived"); err == nil {
		t.Error("the expired recording is still in the local store")
	}
}

// TestPlaybackReadyz: /readyz of a real playback server says ready while
// its store answers and 503 naming the store once it does not.
func TestPlaybackReadyz(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	if code, body := w.get(t, srv.url+"/readyz", ""); code != http.StatusOK || string(body) != "ready\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	srv.store.Close()
	if code, body := w.get(t, srv.url+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(string(body), "store not answering") {
		t.Errorf("/readyz with the store closed: %d %q", code, body)
	}
}
