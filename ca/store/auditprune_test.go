package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

// appendMany appends n events 50 per Update (an etcd transaction holds
// at most 128 operations) and returns them.
func appendMany(t *testing.T, db *store.DB, n int) []store.AuditEvent {
	t.Helper()
	var out []store.AuditEvent
	for len(out) < n {
		out = append(out, appendEvents(t, db, min(50, n-len(out)))...)
	}
	return out
}

// TestPruneAudit: archived records leave the store behind a checkpoint;
// the log then reads and verifies from the checkpoint on, a checkpoint
// that does not continue the current one or names a record by a wrong
// hash is refused, a repeat is a no-op, and the chain goes on across it.
func TestPruneAudit(t *testing.T) {
	ctx := context.Background()
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	evs := appendMany(t, db, 250)

	for _, bad := range []struct {
		name  string
		first uint64
		cp    store.AuditCheckpoint
	}{
		{"not from the start", 2, store.AuditCheckpoint{Seq: 120, Hash: evs[119].Hash}},
		{"wrong hash", 1, store.AuditCheckpoint{Seq: 120, Hash: evs[118].Hash}},
		{"past the head", 1, store.AuditCheckpoint{Seq: 251, Hash: evs[249].Hash}},
	} {
		if n, err := db.PruneAudit(ctx, bad.first, bad.cp); !errors.Is(err, store.ErrInvalid) || n != 0 {
			t.Errorf("%s: PruneAudit = %d, %v; want ErrInvalid and nothing deleted", bad.name, n, err)
		}
	}
	if rep, err := db.VerifyAudit(ctx); err != nil || rep.Archived.Seq != 0 || rep.Records != 250 {
		t.Fatalf("after refused prunes: %+v %v", rep, err)
	}

	cp := store.AuditCheckpoint{Seq: 120, Hash: evs[119].Hash, Seal: "seal-1"}
	if n, err := db.PruneAudit(ctx, 1, cp); err != nil || n != 120 {
		t.Fatalf("PruneAudit(1-120) = %d, %v; want 120 deleted", n, err)
	}
	if n, err := db.PruneAudit(ctx, 1, cp); err != nil || n != 0 {
		t.Fatalf("the same prune again = %d, %v; want a no-op", n, err)
	}
	got, err := db.Audit(ctx, store.AuditFilter{})
	if err != nil || len(got) != 130 || got[0].Seq != 121 || got[0].Hash != evs[120].Hash {
		t.Fatalf("Audit after the prune: %d events from %v, %v; want 121-250", len(got), got[:min(1, len(got))], err)
	}
	if got, err := db.Audit(ctx, store.AuditFilter{AfterSeq: 5, Type: "login", Limit: 1}); err != nil || len(got) != 1 || got[0].Seq <= 120 {
		t.Fatalf("Audit(after 5, login): %v %v; want the first login after the checkpoint", got, err)
	}
	rep, err := db.VerifyAudit(ctx)
	want := store.AuditCheckpoint{Seq: 120, Hash: evs[119].Hash, Seal: "seal-1", Pruned: 120}
	if err != nil || rep.Records != 250 || rep.Head != evs[249].Hash || rep.Archived != want {
		t.Fatalf("VerifyAudit after the prune: %+v %v; want 250 records, archived %+v", rep, err, want)
	}
	if c, err := db.AuditCheckpoint(ctx); err != nil || c != want {
		t.Fatalf("AuditCheckpoint = %+v %v", c, err)
	}

	// Everything archived: the chain is the checkpoint alone, and goes on.
	if n, err := db.PruneAudit(ctx, 121, store.AuditCheckpoint{Seq: 250, Hash: evs[249].Hash, Seal: "seal-2"}); err != nil || n != 130 {
		t.Fatalf("PruneAudit(121-250) = %d, %v", n, err)
	}
	if got, err := db.Audit(ctx, store.AuditFilter{}); err != nil || len(got) != 0 {
		t.Fatalf("Audit with everything pruned: %d events, %v", len(got), err)
	}
	if rep, err := db.VerifyAudit(ctx); err != nil || rep.Records != 250 || rep.Head != evs[249].Hash {
		t.Fatalf("VerifyAudit with everything pruned: %+v %v", rep, err)
	}
	next := appendEvents(t, db, 3)
	if next[0].Seq != 251 || next[0].PrevHash != evs[249].Hash {
		t.Fatalf("the next event: seq %d prev %s; want 251 after %s", next[0].Seq, next[0].PrevHash, evs[249].Hash)
	}
	if rep, err := db.VerifyAudit(ctx); err != nil || rep.Records != 253 || rep.Head != next[2].Hash {
		t.Fatalf("VerifyAudit after more events: %+v %v", rep, err)
	}
	if seq, err := db.AuditHeadSeq(ctx); err != nil || seq != 253 {
		t.Fatalf("AuditHeadSeq = %d %v", seq, err)
	}
}
