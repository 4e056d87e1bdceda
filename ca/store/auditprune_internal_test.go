package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// TestPruneAuditCutShort: a prune cut short after its checkpoint moved
// (the process died between two transactions) leaves a log that reads and
// verifies from the checkpoint, with the records before it not yet deleted
// ignored; the next PruneAudit deletes them.
func TestPruneAuditCutShort(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "ca.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var hashes []string
	err = db.Update(ctx, func(tx *Tx) error {
		hashes = hashes[:0]
		for i := range 30 {
			ev := AuditEvent{Type: "cert.issue", Actor: fmt.Sprint("u", i)}
			if err := tx.AppendAudit(&ev); err != nil {
				return err
			}
			hashes = append(hashes, ev.Hash)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The state a crash leaves: checkpoint at 20, records 1-4 deleted.
	err = db.Update(ctx, func(tx *Tx) error {
		for seq := uint64(1); seq <= 4; seq++ {
			if err := tx.kv.Bucket(bucketAudit).Delete(serialKey(seq)); err != nil {
				return err
			}
		}
		return putJSON(tx.kv.Bucket(bucketInternal), keyAuditCkpt, &AuditCheckpoint{Seq: 20, Hash: hashes[19], Seal: "s", Pruned: 4})
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := db.VerifyAudit(ctx)
	if err != nil || rep.Records != 30 || rep.Archived.Seq != 20 || rep.Archived.Pruned != 4 {
		t.Fatalf("VerifyAudit mid-prune: %+v %v", rep, err)
	}
	if evs, err := db.Audit(ctx, AuditFilter{}); err != nil || len(evs) != 10 || evs[0].Seq != 21 {
		t.Fatalf("Audit mid-prune: %d events, %v; want 21-30", len(evs), err)
	}
	if n, err := db.PruneAudit(ctx, 0, AuditCheckpoint{}); err != nil || n != 16 {
		t.Fatalf("finishing the prune deleted %d, %v; want 16 (5-20)", n, err)
	}
	left := 0
	err = db.View(ctx, func(tx *Tx) error {
		c := tx.kv.Bucket(bucketAudit).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			left++
		}
		return nil
	})
	if err != nil || left != 10 {
		t.Fatalf("%d records left in the store, %v; want 10", left, err)
	}
	if rep, err := db.VerifyAudit(ctx); err != nil || rep.Records != 30 || rep.Archived.Pruned != 20 {
		t.Fatalf("VerifyAudit after: %+v %v", rep, err)
	}
}
