package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// TestPlaybackBackupRestore: a store with a finished recording and audit
// events is backed up (with the real verbs), restored into a fresh
// directory, and there the audit chain verifies, the recording is listed
// and its text is found by search. A wrong passphrase, a tampered file and
// a non-empty target are refused, and nothing is restored then.
func TestPlaybackBackupRestore(t *testing.T) {
	ctx := context.Background()
	work := t.TempDir()
	dir := filepath.Join(work, "pb")
	st, err := store.Open(ctx, store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cast := []byte("{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"cat /etc/backupmarker-7q\\r\\n\"]\n[0.2,\"o\",\"done\\r\\n\"]\n")
	sum := sha256.Sum256(cast)
	m := recorder.Metadata{SessionID: "s1", Identity: "alice", Tier: "production", Host: "web1", Kind: recorder.KindShell,
		Start: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), SHA256: hex.EncodeToString(sum[:]), CastBytes: int64(len(cast)), Finished: true, Complete: true}
	if _, err := st.Start(ctx, store.StartRequest{ID: "s1", Owner: "web1", Meta: m}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, "s1", "web1", 0, cast); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Finish(ctx, store.FinishRequest{ID: "s1", Owner: "web1", Meta: m}); err != nil {
		t.Fatal(err)
	}
	if err := st.WaitIndexed(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AppendAudit(ctx, store.AuditEvent{Type: "view", Actor: "ivy", Subject: "s1"}); err != nil {
		t.Fatal(err)
	}
	before, err := st.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// An index held open by a process that does not answer on the admin
	// socket (a hung server): refused, with what to do.
	t.Setenv(passEnv, "playback-backup-pass-1")
	file := filepath.Join(work, "pb.backup")
	if err := run(ctx, []string{"backup", "--dir", dir, "--to", file}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("backup of an index in use: %v", err)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("a refused backup left a file")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := run(ctx, []string{"backup", "--dir", dir, "--to", file}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	raw, _ := os.ReadFile(file)
	if strings.Contains(string(raw), "backupmarker") || strings.Contains(string(raw), "alice") {
		t.Fatal("the backup file holds plain text of the recording or index")
	}
	if err := run(ctx, []string{"backup", "--dir", dir, "--to", file}, io.Discard, io.Discard); err == nil {
		t.Fatal("backup overwrote an existing file")
	}

	// Refusals: wrong passphrase, tampered file, non-empty target.
	t.Setenv(passEnv, "wrong-passphrase-2")
	if err := run(ctx, []string{"restore", "--from", file, "--dir", filepath.Join(work, "wrong")}, io.Discard, io.Discard); err == nil {
		t.Fatal("restore with a wrong passphrase")
	}
	t.Setenv(passEnv, "playback-backup-pass-1")
	bad := append([]byte(nil), raw...)
	bad[len(bad)-40] ^= 1
	badFile := filepath.Join(work, "bad.backup")
	if err := os.WriteFile(badFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"restore", "--from", badFile, "--dir", filepath.Join(work, "tampered")}, io.Discard, io.Discard); err == nil {
		t.Fatal("restore of a tampered backup")
	}
	for _, d := range []string{"wrong", "tampered"} {
		if _, err := os.Stat(filepath.Join(work, d)); err == nil {
			t.Fatalf("a refused restore left %s", d)
		}
	}
	if err := run(ctx, []string{"restore", "--from", file, "--dir", dir}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore over the live directory: %v", err)
	}

	fresh := filepath.Join(work, "fresh")
	if err := run(ctx, []string{"restore", "--from", file, "--dir", fresh}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	rs, err := store.Open(ctx, store.Config{Dir: fresh})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	after, err := rs.VerifyAudit(ctx)
	if err != nil || after.Head != before.Head || after.Events != before.Events {
		t.Fatalf("restored audit chain: %+v %v, before %+v", after, err, before)
	}
	if r, err := rs.Get(ctx, "s1"); err != nil || r == nil {
		t.Fatalf("restored recording: %v", err)
	}
	hits, err := rs.Search(ctx, store.Query{Text: "backupmarker-7q"})
	if err != nil || len(hits) != 1 || hits[0].SessionID != "s1" {
		t.Fatalf("search in the restored index: %+v %v", hits, err)
	}
	if sha, n, err := rs.Digest("s1"); err != nil || sha != m.SHA256 || n != int64(len(cast)) {
		t.Fatalf("restored cast digest: %s %d %v", sha, n, err)
	}
}
