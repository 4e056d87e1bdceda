package auditarchive_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/auditarchive"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/playback/objstore"
	"github.com/sshward/sshward/playback/objstore/s3test"
)

func appendEvents(t *testing.T, db *store.DB, from, n int) {
	t.Helper()
	err := db.Update(context.Background(), func(tx *store.Tx) error {
		for i := from; i < from+n; i++ {
			ev := store.AuditEvent{Type: "cert.issue", Actor: fmt.Sprintf("user%d", i), Outcome: "ok",
				Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Second), Serial: uint64(i)}
			if err := tx.AppendAudit(&ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// archiveWorld starts a real S3-compatible server (versitygw) with its
// bucket open and a real CA store (bbolt), closed with the test.
func archiveWorld(t *testing.T) (*s3test.Server, *objstore.Bucket, *store.DB) {
	t.Helper()
	s3 := s3test.Start(t)
	b, err := objstore.Open(t.Context(), objstore.Config{Endpoint: s3.Endpoint, Bucket: s3.Bucket, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, HTTPClient: s3.HTTPClient})
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(t.Context(), store.Options{Path: filepath.Join(t.TempDir(), "ca.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return s3, b, db
}

// TestArchiveAndVerifyFromS3: a real CA store (bbolt) and a real
// S3-compatible server (versitygw). The log is archived in sealed segments
// (only full ones, again after more events, idempotently), Verify checks
// the whole chain from the bucket alone and reports the store's head; then
// an attacker with write access to the bucket's files edits one event,
// fixes up only its hash, replaces a segment by an older copy, deletes a
// segment: each is found, at the right place.
func TestArchiveAndVerifyFromS3(t *testing.T) {
	ctx := context.Background()
	s3, b, db := archiveWorld(t)
	appendEvents(t, db, 1, 25)
	if n, err := auditarchive.Archive(ctx, db, b, 10); err != nil || n != 2 {
		t.Fatalf("first archive: %d segments, %v; want 2 (the 5-event tail waits)", n, err)
	}
	if n, err := auditarchive.Archive(ctx, db, b, 10); err != nil || n != 0 {
		t.Fatalf("archive again: %d segments, %v; want 0", n, err)
	}
	appendEvents(t, db, 26, 17)
	if n, err := auditarchive.Archive(ctx, db, b, 10); err != nil || n != 2 {
		t.Fatalf("archive after 17 more events: %d, %v; want 2", n, err)
	}
	if _, err := auditarchive.Archive(ctx, db, b, 20); err == nil || !strings.Contains(err.Error(), "segments of 10") {
		t.Fatalf("another segment size on the same bucket: %v", err)
	}
	rep, err := auditarchive.Verify(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := db.Audit(ctx, store.AuditFilter{AfterSeq: 39, Limit: 1})
	if err != nil || len(evs) != 1 {
		t.Fatal(err)
	}
	if rep.Segments != 4 || rep.Records != 40 || rep.Head != evs[0].Hash {
		t.Fatalf("verify: %+v, want 4 segments, 40 records, head %s", rep, evs[0].Hash)
	}

	// The attacker works on the server's files (posix backend).
	file := func(first, last uint64) string {
		return filepath.Join(s3.Dir, s3.Bucket, auditarchive.Key(first, last))
	}
	seg2 := file(11, 20)
	orig, err := os.ReadFile(seg2)
	if err != nil {
		t.Fatal(err)
	}
	broken := func(what string, wantSeq uint64, wantReason string) {
		t.Helper()
		_, err := auditarchive.Verify(ctx, b)
		var ce *store.ChainError
		if !errors.As(err, &ce) || ce.Seq != wantSeq || !strings.Contains(ce.Reason, wantReason) {
			t.Fatalf("%s: verify said %v, want the chain broken at %d (%s)", what, err, wantSeq, wantReason)
		}
	}
	// 1. One event edited (actor user15 → mallory).
	if err := os.WriteFile(seg2, []byte(strings.Replace(string(orig), `"user15"`, `"mallory"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	broken("an edited event", 11, "digest")
	// 2. The same edit with the seal's digest recomputed: the event's own
	// hash still gives it away.
	edited := resealed(t, strings.Replace(string(orig), `"user15"`, `"mallory"`, 1))
	if err := os.WriteFile(seg2, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	broken("an edited event, seal fixed up", 15, "hash does not match content")
	// 3. A segment deleted.
	if err := os.WriteFile(seg2, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := auditarchive.Verify(ctx, b); err != nil {
		t.Fatalf("restored: %v", err)
	}
	if err := os.Remove(seg2); err != nil {
		t.Fatal(err)
	}
	broken("a deleted segment", 11, "segment missing")
	// 4. A segment replaced by another one (the first, renamed).
	first, err := os.ReadFile(file(1, 10))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg2, first, 0o600); err != nil {
		t.Fatal(err)
	}
	broken("a replaced segment", 11, "seal names 1-10")
}

// resealed recomputes the seal's events_sha256 of a segment, as an
// attacker who knows the format would.
func resealed(t *testing.T, seg string) string {
	t.Helper()
	body := strings.TrimSuffix(seg, "\n")
	i := strings.LastIndexByte(body, '\n')
	events, seal := seg[:i+1], body[i+1:]
	sum := sha256Hex(events)
	j := strings.Index(seal, `"events_sha256":"`) + len(`"events_sha256":"`)
	return events + seal[:j] + sum + seal[j+64:] + "\n"
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestArchiveRewritesTornSegment: the bucket's last segment is torn (the
// start of it only, as a server that did not check a cut-short body
// stores it). Verify finds it; the next Archive writes it again from the
// store's events and the chain verifies. A last segment that is not the
// start of the store's events (edited) is not overwritten; one whose
// events were pruned from the store is reported, not guessed.
func TestArchiveRewritesTornSegment(t *testing.T) {
	ctx := context.Background()
	s3, b, db := archiveWorld(t)
	appendEvents(t, db, 1, 25)
	if n, err := auditarchive.Archive(ctx, db, b, 10); err != nil || n != 2 {
		t.Fatalf("archive: %d %v", n, err)
	}
	seg2 := filepath.Join(s3.Dir, s3.Bucket, auditarchive.Key(11, 20))
	whole, err := os.ReadFile(seg2)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{0, len(whole) / 2, strings.LastIndexByte(strings.TrimSuffix(string(whole), "\n"), '\n') + 1, len(whole) - 1} {
		if err := os.WriteFile(seg2, whole[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		var ce *store.ChainError
		if _, err := auditarchive.Verify(ctx, b); !errors.As(err, &ce) || ce.Seq != 11 {
			t.Fatalf("torn at %d: verify said %v, want the chain broken at 11", cut, err)
		}
		if n, err := auditarchive.Archive(ctx, db, b, 10); err != nil || n != 1 {
			t.Fatalf("torn at %d: archive wrote %d segments, %v; want the torn one again", cut, n, err)
		}
		if got, _ := os.ReadFile(seg2); string(got) != string(whole) {
			t.Fatalf("torn at %d: rewritten segment is not the segment", cut)
		}
		if rep, err := auditarchive.Verify(ctx, b); err != nil || rep.Records != 20 {
			t.Fatalf("torn at %d, rewritten: %+v %v", cut, rep, err)
		}
	}

	// Not the start of the store's events: left as it is, refused.
	edited := []byte(strings.Replace(string(whole[:len(whole)/2]), `"user12"`, `"mallory"`, 1))
	if err := os.WriteFile(seg2, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := auditarchive.Archive(ctx, db, b, 10); err == nil || !strings.Contains(err.Error(), "differs from the store's events") || n != 0 {
		t.Fatalf("archive over an edited torn segment: %d %v", n, err)
	}
	if got, _ := os.ReadFile(seg2); string(got) != string(edited) {
		t.Fatal("an edited torn segment was overwritten")
	}

	// Pruned from the store: nothing to write it from.
	if err := os.WriteFile(seg2, whole, 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := auditarchive.Prune(ctx, db, b, 10, ^uint64(0)); err != nil || n != 2 {
		t.Fatalf("prune: %d %v", n, err)
	}
	if err := os.WriteFile(seg2, whole[:len(whole)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := auditarchive.Archive(ctx, db, b, 10); err == nil || !strings.Contains(err.Error(), "seal") {
		t.Fatalf("archive over a torn segment already pruned: %v", err)
	}
}
