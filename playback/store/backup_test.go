package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// backupToDir is a BackupAdd that writes the files under dir.
func backupToDir(t *testing.T, dir string, each func(name string)) BackupAdd {
	return func(name string, size int64, mode fs.FileMode, write func(io.Writer) error) error {
		if each != nil {
			each(name)
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := write(&buf); err != nil {
			f.Close()
			return err
		}
		if int64(buf.Len()) != size {
			f.Close()
			return fmt.Errorf("%s: wrote %d bytes, announced %d", name, buf.Len(), size)
		}
		_, err = f.Write(buf.Bytes())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
}

// TestBackupWhileIngesting: a backup taken while a recording is being
// appended to, chunk after chunk, and while retention deletes a finished
// one. The copy is consistent: the live recording's bytes are exactly
// those acknowledged up to some chunk (never half a chunk), and in the
// restored store the host resumes there (Start answers that size) and
// finishes with the whole recording's digest; the finished recording is
// whole (digest, search), its deletion waited for the backup; the audit
// chain verifies and ends where the report says.
func TestBackupWhileIngesting(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, "")
	fin := cast(`[0.1,"o","finished-text-q7\r\n"]`)
	finRec := ingest(t, s, "fin-1", "production", fin)
	if err := s.WaitIndexed(ctx, "fin-1"); err != nil {
		t.Fatal(err)
	}

	// The live recording: one chunk of 3 lines after another until stopped.
	var full bytes.Buffer
	full.WriteString(`{"version":2,"width":80,"height":24}` + "\n")
	for i := range 400 {
		fmt.Fprintf(&full, "[%d.0,\"o\",\"live line %05d\\r\\n\"]\n", i, i)
	}
	lines := bytes.SplitAfter(full.Bytes(), []byte("\n"))
	var chunks [][]byte
	chunks = append(chunks, lines[0])
	for i := 1; i < len(lines); i += 3 {
		chunks = append(chunks, bytes.Join(lines[i:min(i+3, len(lines))], nil))
	}
	m := meta("live-1", "production", full.Bytes())
	if _, err := s.Start(ctx, StartRequest{ID: "live-1", Owner: "web1", Meta: m}); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		acked  = []int64{0}
		next   = 0
		stored int64
	)
	appendOne := func() bool {
		if next >= len(chunks) {
			return false
		}
		n, err := s.Append(ctx, "live-1", "web1", stored, chunks[next])
		if err != nil {
			t.Error(err)
			return false
		}
		stored, next = n, next+1
		mu.Lock()
		acked = append(acked, n)
		mu.Unlock()
		return true
	}
	for range 20 {
		appendOne()
	}
	stop := make(chan struct{})
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !appendOne() {
				return
			}
		}
	}()

	// Retention deletes the finished recording while the backup runs: it
	// waits for the backup.
	dir := t.TempDir()
	deleted := make(chan error, 1)
	var startDelete sync.Once
	rep, err := s.Backup(ctx, backupToDir(t, dir, func(name string) {
		startDelete.Do(func() {
			go func() {
				_, err := s.Delete(ctx, "fin-1")
				deleted <- err
			}()
		})
		if name == "blobs/fin-1.cast" {
			select {
			case err := <-deleted:
				t.Errorf("the recording was deleted during the backup (%v)", err)
				deleted <- err // for the wait below
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	close(stop)
	<-appended
	if err != nil {
		t.Fatal(err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("delete after the backup: %v", err)
	}
	if rep.Finished != 1 || len(rep.Live) != 1 || rep.Live[0].ID != "live-1" {
		t.Fatalf("report %+v", rep)
	}
	live := rep.Live[0].CastBytes
	mu.Lock()
	onChunk := slices.Contains(acked, live)
	mu.Unlock()
	if !onChunk || live == 0 {
		t.Fatalf("the backup holds %d bytes of the live recording: not an acknowledged chunk boundary (acked %v)", live, acked)
	}

	// The restored store.
	r := mustOpen(t, dir)
	audit, err := r.VerifyAudit(ctx)
	if err != nil || audit != rep.Audit {
		t.Fatalf("restored audit chain %+v %v, report %+v", audit, err, rep.Audit)
	}
	if sha, n, err := r.Digest("fin-1"); err != nil || sha != finRec.Meta.SHA256 || n != int64(len(fin)) {
		t.Fatalf("restored finished recording: %s %d %v", sha, n, err)
	}
	if hits, err := r.Search(ctx, Query{Text: "finished-text-q7"}); err != nil || len(hits) != 1 {
		t.Fatalf("search in the restored store: %+v %v", hits, err)
	}
	got, err := r.Start(ctx, StartRequest{ID: "live-1", Owner: "web1", Meta: m})
	if err != nil || got != live {
		t.Fatalf("the host resumes the restored live recording at %d (%v), want %d", got, err, live)
	}
	f, err := r.OpenCast("live-1")
	if err != nil {
		t.Fatal(err)
	}
	prefix, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(prefix, full.Bytes()[:live]) {
		t.Fatal("the restored live bytes are not the recording's prefix")
	}
	rest := full.Bytes()[live:]
	pos := live
	for _, line := range bytes.SplitAfter(rest, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if pos, err = r.Append(ctx, "live-1", "web1", pos, line); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Finish(ctx, FinishRequest{ID: "live-1", Owner: "web1", Meta: m, Signature: "sig"}); err != nil {
		t.Fatalf("finish the resumed recording: %v", err)
	}
	if _, err := r.Delete(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of an unknown recording: %v", err)
	}
}

// TestBackupRefusesBrokenAuditChain: a store whose audit chain was
// edited is not backed up, and nothing is handed out.
func TestBackupRefusesBrokenAuditChain(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := mustOpen(t, dir)
	ingest(t, s, "fin-1", "production", cast(`[0.1,"o","x\r\n"]`))
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		k, v := b.Cursor().First()
		return b.Put(k, bytes.Replace(v, []byte("fin-1"), []byte("fin-2"), 1))
	}); err != nil {
		t.Fatal(err)
	}
	var names []string
	_, err := s.Backup(ctx, func(name string, size int64, mode fs.FileMode, write func(io.Writer) error) error {
		names = append(names, name)
		return write(io.Discard)
	})
	var ce *ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("backup of an edited audit chain: %v", err)
	}
	if slices.Contains(names, indexDB) || slices.ContainsFunc(names, func(n string) bool { return filepath.Dir(n) == "blobs" }) {
		t.Fatalf("a refused backup handed out %v", names)
	}
}
