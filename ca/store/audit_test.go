package store_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
	bolt "go.etcd.io/bbolt"
)

// appendEvents appends n events in one Update (Seq 1..n on a fresh store).
func appendEvents(t testing.TB, db *store.DB, n int) []store.AuditEvent {
	t.Helper()
	var out []store.AuditEvent
	mustUpdate(t, db, func(tx *store.Tx) error {
		out = out[:0] // idempotent: a re-run starts over
		for i := range n {
			ev := store.AuditEvent{Type: "cert.issue", Actor: fmt.Sprintf("user%d", i), Serial: uint64(100 + i), Tier: "staging",
				KeyID: "k", Details: map[string]string{"principals": "deploy,alice", "i": fmt.Sprint(i)}}
			if i%3 == 2 {
				ev.Type, ev.Outcome, ev.Reason = "login", store.OutcomeRefused, "bad password"
			}
			if err := tx.AppendAudit(&ev); err != nil {
				return err
			}
			out = append(out, ev)
		}
		return nil
	})
	return out
}

func TestAppendAudit(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	evs := appendEvents(t, db, 6)
	prev := ""
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) || ev.PrevHash != prev || ev.Hash != store.AuditHash(&ev) || len(ev.Hash) != 64 || !ev.Time.Equal(t0) {
			t.Errorf("event %d: seq %d prev %q hash %q time %v", i, ev.Seq, ev.PrevHash, ev.Hash, ev.Time)
		}
		if ev.Outcome == "" {
			t.Errorf("event %d: outcome not defaulted", i)
		}
		prev = ev.Hash
	}

	t.Run("filters", func(t *testing.T) {
		tests := []struct {
			name string
			f    store.AuditFilter
			want []uint64
		}{
			{"all", store.AuditFilter{}, []uint64{1, 2, 3, 4, 5, 6}},
			{"after", store.AuditFilter{AfterSeq: 4}, []uint64{5, 6}},
			{"limit", store.AuditFilter{AfterSeq: 1, Limit: 2}, []uint64{2, 3}},
			{"type", store.AuditFilter{Type: "login"}, []uint64{3, 6}},
			{"after the end", store.AuditFilter{AfterSeq: 6}, nil},
			{"max after", store.AuditFilter{AfterSeq: ^uint64(0)}, nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := db.Audit(t.Context(), tc.f)
				if err != nil {
					t.Fatal(err)
				}
				var seqs []uint64
				for _, ev := range got {
					seqs = append(seqs, ev.Seq)
				}
				if !reflect.DeepEqual(seqs, tc.want) {
					t.Errorf("seqs %v, want %v", seqs, tc.want)
				}
			})
		}
		got, _ := db.Audit(t.Context(), store.AuditFilter{AfterSeq: 2, Limit: 1})
		if len(got) != 1 || !reflect.DeepEqual(got[0], evs[2]) {
			t.Errorf("stored event differs:\n got %+v\nwant %+v", got, evs[2])
		}
	})

	t.Run("refuses", func(t *testing.T) {
		for _, ev := range []store.AuditEvent{{}, {Type: "x", Outcome: "maybe"}} {
			err := db.Update(t.Context(), func(tx *store.Tx) error { return tx.AppendAudit(&ev) })
			if !errors.Is(err, store.ErrInvalid) {
				t.Errorf("AppendAudit(%+v) = %v, want ErrInvalid", ev, err)
			}
		}
	})

	t.Run("invalid UTF-8 is repaired and verifies", func(t *testing.T) {
		ev := store.AuditEvent{Type: "login", Actor: "ev\xffil", Outcome: store.OutcomeRefused,
			Details: map[string]string{"user\xfe": "\xc3", "ok": "fine"}}
		mustUpdate(t, db, func(tx *store.Tx) error { return tx.AppendAudit(&ev) })
		if ev.Actor != "ev\uFFFDil" || ev.Details["user\uFFFD"] != "\uFFFD" || ev.Details["ok"] != "fine" {
			t.Errorf("repaired event %+v", ev)
		}
		if _, err := db.VerifyAudit(t.Context()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("verify", func(t *testing.T) {
		rep, err := db.VerifyAudit(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		last, _ := db.Audit(t.Context(), store.AuditFilter{AfterSeq: 6})
		if rep.Records != 7 || rep.Head != last[0].Hash {
			t.Errorf("report %+v, want 7 records ending in %s", rep, last[0].Hash)
		}
	})
}

// TestAuditHashGolden pins the canonical encoding: if this hash changes,
// every stored audit log stops verifying.
func TestAuditHashGolden(t *testing.T) {
	ev := store.AuditEvent{Seq: 2, Time: time.Date(2026, 11, 21, 10, 0, 0, 123456789, time.FixedZone("CET", 3600)),
		Type: "cert.issue", Actor: "alice", Subject: "alice", Tier: "production", Serial: 42, KeyID: "alice@laptop",
		RequestID: "req-1", ClientAddr: "192.0.2.1:5555", Outcome: "ok", Reason: "",
		Details: map[string]string{"principals": "alice", "ttl": "15m"}, PrevHash: strings.Repeat("ab", 32)}

	// The encoding as documented on AuditHash, written out independently.
	var b []byte
	str := func(s string) { b = binary.BigEndian.AppendUint32(b, uint32(len(s))); b = append(b, s...) }
	str("sshward-audit-v1")
	str(ev.PrevHash)
	b = binary.BigEndian.AppendUint64(b, 2)
	str("2026-11-21T09:00:00.123456789Z")
	str("cert.issue")
	str("alice")
	str("alice")
	str("production")
	b = binary.BigEndian.AppendUint64(b, 42)
	for _, s := range []string{"alice@laptop", "req-1", "192.0.2.1:5555", "ok", ""} {
		str(s)
	}
	b = binary.BigEndian.AppendUint32(b, 2)
	for _, s := range []string{"principals", "alice", "ttl", "15m"} {
		str(s)
	}
	sum := sha256.Sum256(b)
	want := hex.EncodeToString(sum[:])

	const golden = "0c7ab45abb065b7421bcfec6ddd6e5b823f6bf539a61de6cb1834500bc624435"
	got := store.AuditHash(&ev)
	if got != want {
		t.Fatalf("AuditHash = %s, the documented encoding gives %s", got, want)
	}
	if got != golden {
		t.Errorf("AuditHash = %s, golden %s: the canonical encoding changed", got, golden)
	}
	ev.Hash = "ignored"
	if store.AuditHash(&ev) != got {
		t.Error("Hash field is part of the hash")
	}
}

// tamperCopy builds a store with n audit records, copies the file and lets
// edit change the copy through raw bbolt, keeping the original intact.
func tamperCopy(t *testing.T, n int, edit func(audit, internal *bolt.Bucket) error) string {
	t.Helper()
	db := storetest.MustOpen(t)
	appendEvents(t, db, n)
	cp := filepath.Join(t.TempDir(), "copy.db")
	if err := db.Snapshot(t.Context(), cp); err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(cp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	if err := bdb.Update(func(tx *bolt.Tx) error {
		return edit(tx.Bucket([]byte("audit")), tx.Bucket([]byte("internal")))
	}); err != nil {
		t.Fatal(err)
	}
	return cp
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func editRecord(seq uint64, fn func(ev *store.AuditEvent)) func(audit, _ *bolt.Bucket) error {
	return func(audit, _ *bolt.Bucket) error {
		var ev store.AuditEvent
		if err := json.Unmarshal(audit.Get(seqKey(seq)), &ev); err != nil {
			return err
		}
		fn(&ev)
		raw, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		return audit.Put(seqKey(seq), raw)
	}
}

func TestVerifyAuditDetectsTampering(t *testing.T) {
	storetest.BoltOnly(t)
	const n = 10
	tests := []struct {
		name    string
		edit    func(audit, internal *bolt.Bucket) error
		wantSeq uint64
		reason  string
	}{
		{"actor edited, stored hash kept", editRecord(5, func(ev *store.AuditEvent) { ev.Actor = "someone-else" }), 5, "edited"},
		{"outcome flipped", editRecord(3, func(ev *store.AuditEvent) { ev.Outcome = store.OutcomeOK }), 3, "edited"},
		{"details edited", editRecord(9, func(ev *store.AuditEvent) { ev.Details["i"] = "x" }), 9, "edited"},
		{"edited with the hash recomputed", editRecord(5, func(ev *store.AuditEvent) {
			ev.Actor = "someone-else"
			ev.Hash = store.AuditHash(ev)
		}), 6, "previous hash"},
		{"last record edited with the hash recomputed", editRecord(n, func(ev *store.AuditEvent) {
			ev.Actor = "someone-else"
			ev.Hash = store.AuditHash(ev)
		}), n, "head hash"},
		{"middle record deleted", func(a, _ *bolt.Bucket) error { return a.Delete(seqKey(5)) }, 5, "missing"},
		{"first record deleted", func(a, _ *bolt.Bucket) error { return a.Delete(seqKey(1)) }, 1, "missing"},
		{"last record deleted", func(a, _ *bolt.Bucket) error { return a.Delete(seqKey(n)) }, n, "truncated"},
		{"head deleted", func(_, in *bolt.Bucket) error { return in.Delete([]byte("audit_head")) }, n, "head missing"},
		{"record moved to another key", func(a, _ *bolt.Bucket) error {
			v := a.Get(seqKey(4))
			return a.Put(seqKey(3), append([]byte(nil), v...))
		}, 3, "claims seq"},
		{"record garbled", func(a, _ *bolt.Bucket) error { return a.Put(seqKey(2), []byte("{not json")) }, 2, "decode"},
		{"record forged after the head", func(a, _ *bolt.Bucket) error {
			var last store.AuditEvent
			if err := json.Unmarshal(a.Get(seqKey(n)), &last); err != nil {
				return err
			}
			forged := store.AuditEvent{Seq: n + 1, Time: last.Time, Type: "cert.issue", Outcome: "ok", PrevHash: last.Hash}
			forged.Hash = store.AuditHash(&forged)
			raw, _ := json.Marshal(forged)
			return a.Put(seqKey(n+1), raw)
		}, n + 1, "after the head"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cp := tamperCopy(t, n, tc.edit)
			_, err := store.VerifyFile(t.Context(), cp)
			var ce *store.ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("VerifyFile = %v, want *ChainError", err)
			}
			if ce.Seq != tc.wantSeq || !strings.Contains(ce.Reason, tc.reason) {
				t.Errorf("ChainError{Seq: %d, Reason: %q}, want seq %d and reason mentioning %q", ce.Seq, ce.Reason, tc.wantSeq, tc.reason)
			}
		})
	}

	t.Run("untouched copy verifies", func(t *testing.T) {
		cp := tamperCopy(t, n, func(_, _ *bolt.Bucket) error { return nil })
		rep, err := store.VerifyFile(t.Context(), cp)
		if err != nil || rep.Records != n || len(rep.Head) != 64 {
			t.Fatalf("VerifyFile = %+v, %v", rep, err)
		}
	})
	t.Run("empty store verifies", func(t *testing.T) {
		db := storetest.MustOpen(t)
		rep, err := db.VerifyAudit(t.Context())
		if err != nil || rep != (store.AuditReport{}) {
			t.Fatalf("VerifyAudit = %+v, %v", rep, err)
		}
	})
	t.Run("file copied with cp verifies", func(t *testing.T) {
		db := storetest.MustOpen(t)
		appendEvents(t, db, 3)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		cp := filepath.Join(t.TempDir(), "cp.db")
		copyFile(t, db.Path(), cp)
		if rep, err := store.VerifyFile(t.Context(), cp); err != nil || rep.Records != 3 {
			t.Fatalf("VerifyFile = %+v, %v", rep, err)
		}
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
