package store

// Internal tests: they look at the committer's queue and at bbolt
// transaction ids to prove that closures really share transactions.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T, o Options) *DB {
	t.Helper()
	if o.Path == "" {
		o.Path = filepath.Join(t.TempDir(), "ca.db")
	}
	db, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// holdCommitter parks the committer inside a closure until release is
// called, so that the test can queue a batch behind it.
func holdCommitter(t *testing.T, db *DB) (release func()) {
	t.Helper()
	db.noInline.Store(true) // the closures below must queue for the committer
	started, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		_ = db.Update(context.Background(), func(*Tx) error {
			once.Do(func() { close(started) })
			<-gate
			return nil
		})
	}()
	<-started
	return func() { close(gate) }
}

// waitQueued waits until n calls wait in the committer's queue.
func waitQueued(t *testing.T, db *DB, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(db.calls) < n {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d calls, want %d", len(db.calls), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func metaKeys(t *testing.T, db *DB, keys ...string) (present []string) {
	t.Helper()
	err := db.View(context.Background(), func(tx *Tx) error {
		for _, k := range keys {
			if _, err := tx.GetMeta(k); err == nil {
				present = append(present, k)
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return present
}

func TestGroupCommitManyWriters(t *testing.T) {
	const writers, each = 64, 25
	path := filepath.Join(t.TempDir(), "ca.db")
	db := openTemp(t, Options{Path: path})

	var mu sync.Mutex
	txids := map[int]int{} // committed tx id → closures in it
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				serial := uint64(w*each + i + 1)
				var txid int
				err := db.Update(t.Context(), func(tx *Tx) error {
					txid = tx.kv.(boltTx).tx.ID()
					if err := tx.PutCert(&CertRecord{Serial: serial, KeyID: fmt.Sprintf("w%d", w), Kind: CertKindUser}); err != nil {
						return err
					}
					return tx.AppendAudit(&AuditEvent{Type: "cert.issue", Serial: serial})
				})
				if err != nil {
					t.Errorf("update %d: %v", serial, err)
					return
				}
				mu.Lock()
				txids[txid]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	const total = writers * each
	t.Logf("%d updates in %d commits", total, len(txids))
	if len(txids) > total/2 {
		t.Errorf("%d updates took %d commits: not batched", total, len(txids))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openTemp(t, Options{Path: path, ReadOnly: true})
	err := db.View(t.Context(), func(tx *Tx) error {
		certs, err := tx.ListCerts(CertFilter{})
		if err != nil {
			return err
		}
		if len(certs) != total {
			t.Errorf("%d certs after reopen, want %d", len(certs), total)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := db.Audit(t.Context(), AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, ev.Seq)
		}
		seen[ev.Serial] = true
	}
	if len(evs) != total || len(seen) != total {
		t.Errorf("%d audit records for %d serials, want %d", len(evs), len(seen), total)
	}
	rep, err := db.VerifyAudit(t.Context())
	if err != nil || rep.Records != total {
		t.Fatalf("VerifyAudit = %+v, %v", rep, err)
	}
}

func TestSequentialUpdatesCommitEach(t *testing.T) {
	db := openTemp(t, Options{})
	var ids []int
	for i := range 5 {
		err := db.Update(t.Context(), func(tx *Tx) error {
			ids = append(ids[:i], tx.kv.(boltTx).tx.ID())
			return tx.PutMeta("k", []byte{byte(i)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Errorf("tx ids %v: each Update should commit its own transaction", ids)
		}
	}
}

func TestBatchFailureIsolated(t *testing.T) {
	const n, bad, panicky = 10, 5, 7
	errBoom := errors.New("boom")
	db := openTemp(t, Options{})
	release := holdCommitter(t, db)

	runs := make([]atomic.Int32, n)
	txid := make([]atomic.Int64, n)
	results := make([]chan any, n) // error, or the recovered panic value
	for i := range n {
		results[i] = make(chan any, 1)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					results[i] <- fmt.Sprintf("panic: %v", p)
				}
			}()
			results[i] <- db.Update(context.Background(), func(tx *Tx) error {
				runs[i].Add(1)
				txid[i].Store(int64(tx.kv.(boltTx).tx.ID()))
				if err := tx.PutMeta(fmt.Sprintf("k%d", i), []byte("v")); err != nil {
					return err
				}
				switch i {
				case bad:
					return errBoom
				case panicky:
					panic("closure bug")
				}
				return nil
			})
		}()
		waitQueued(t, db, i+1) // queue in a known order
	}
	release()

	for i := range n {
		got := <-results[i]
		switch i {
		case bad:
			if err, _ := got.(error); !errors.Is(err, errBoom) {
				t.Errorf("closure %d: %v, want errBoom", i, got)
			}
		case panicky:
			if got != "panic: closure bug" {
				t.Errorf("closure %d: %v, want its panic re-raised", i, got)
			}
		default:
			if got != nil && got != error(nil) {
				t.Errorf("closure %d: %v, want nil", i, got)
			}
		}
	}
	// Closures before the failing one ran once per attempt: three attempts
	// (fail at 5, fail at 7, commit) for 0–4, two for 6, one for the rest.
	wantRuns := []int32{3, 3, 3, 3, 3, 1, 2, 1, 1, 1}
	for i := range n {
		if r := runs[i].Load(); r != wantRuns[i] {
			t.Errorf("closure %d ran %d times, want %d", i, r, wantRuns[i])
		}
	}
	for i := range n {
		if i != bad && i != panicky && txid[i].Load() != txid[0].Load() {
			t.Errorf("closure %d committed in tx %d, closure 0 in %d: not one batch", i, txid[i].Load(), txid[0].Load())
		}
	}
	var keys []string
	for i := range n {
		keys = append(keys, fmt.Sprintf("k%d", i))
	}
	got := metaKeys(t, db, keys...)
	want := []string{"k0", "k1", "k2", "k3", "k4", "k6", "k8", "k9"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("committed %v, want %v", got, want)
	}
}

func TestUpdateContext(t *testing.T) {
	t.Run("already cancelled", func(t *testing.T) {
		db := openTemp(t, Options{})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		ran := false
		err := db.Update(ctx, func(*Tx) error { ran = true; return nil })
		if !errors.Is(err, context.Canceled) || ran {
			t.Fatalf("Update = %v (ran %v), want context.Canceled without running", err, ran)
		}
	})
	t.Run("cancelled while queued: returns and never runs", func(t *testing.T) {
		db := openTemp(t, Options{})
		release := holdCommitter(t, db)
		ctx, cancel := context.WithCancel(t.Context())
		var ran atomic.Bool
		done := make(chan error, 1)
		go func() {
			done <- db.Update(ctx, func(tx *Tx) error { ran.Store(true); return tx.PutMeta("late", nil) })
		}()
		waitQueued(t, db, 1)
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Update = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Update did not return after cancel")
		}
		release()
		// A later write proves the committer moved past the cancelled call.
		if err := db.Update(t.Context(), func(tx *Tx) error { return tx.PutMeta("after", nil) }); err != nil {
			t.Fatal(err)
		}
		if ran.Load() || len(metaKeys(t, db, "late")) != 0 {
			t.Error("a call cancelled before its batch started still ran")
		}
	})
	t.Run("cancelled while running: the write lands", func(t *testing.T) {
		db := openTemp(t, Options{})
		ctx, cancel := context.WithCancel(t.Context())
		err := db.Update(ctx, func(tx *Tx) error {
			cancel()
			return tx.PutMeta("landed", nil)
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Update = %v", err)
		}
		// Update may have returned before the commit; the next one queues
		// behind it.
		if err := db.Update(t.Context(), func(*Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if len(metaKeys(t, db, "landed")) != 1 {
			t.Error("write of a closure that ran to the end was lost")
		}
	})
}

func TestCloseDrainsQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.db")
	db := openTemp(t, Options{Path: path})
	release := holdCommitter(t, db)
	const n = 5
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- db.Update(context.Background(), func(tx *Tx) error { return tx.PutMeta(fmt.Sprintf("k%d", i), nil) })
		}()
	}
	waitQueued(t, db, n)
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while writes were queued")
	case <-time.After(50 * time.Millisecond):
	}
	release()
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("queued update: %v", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := db.Update(t.Context(), func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Update after Close = %v, want ErrClosed", err)
	}
	if err := db.View(t.Context(), func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("View after Close = %v, want ErrClosed", err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	db = openTemp(t, Options{Path: path})
	if got := metaKeys(t, db, "k0", "k1", "k2", "k3", "k4"); len(got) != n {
		t.Errorf("after reopen: %v", got)
	}
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.db")
	db := openTemp(t, Options{Path: path})
	err := db.bolt.Update(func(btx *bolt.Tx) error {
		return btx.Bucket(bucketInternal).Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion+1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		if _, err := Open(t.Context(), Options{Path: path, ReadOnly: ro}); !errors.Is(err, ErrSchema) {
			t.Errorf("Open(ReadOnly=%v) = %v, want ErrSchema", ro, err)
		}
	}
}

// TestLoneWriterInline: a writer with no company commits on its own
// goroutine (commitInline) with every rule of Update intact: one commit per
// call, the closure's error unchanged and nothing it wrote kept, its panic
// re-raised to the caller, a cancelled context refused, and the committer
// still serving batches afterwards.
func TestLoneWriterInline(t *testing.T) {
	db := openTemp(t, Options{})
	ctx := context.Background()
	callerG := func() string { b := make([]byte, 64); return string(b[:runtimeStack(b)]) }
	me := callerG()
	var ranOn string
	if err := db.Update(ctx, func(tx *Tx) error { ranOn = callerG(); return tx.PutMeta("a", []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	if ranOn != me {
		t.Errorf("lone writer's closure ran on %q, not on the caller %q", ranOn, me)
	}
	errBoom := errors.New("boom")
	if err := db.Update(ctx, func(tx *Tx) error { _ = tx.PutMeta("b", []byte("1")); return errBoom }); err != errBoom {
		t.Errorf("closure error: %v, want errBoom unchanged", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "inline bug" {
				t.Errorf("recovered %v, want the closure's panic", p)
			}
		}()
		_ = db.Update(ctx, func(tx *Tx) error { _ = tx.PutMeta("c", []byte("1")); panic("inline bug") })
		t.Error("panic not re-raised")
	}()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := db.Update(cctx, func(tx *Tx) error { return tx.PutMeta("d", []byte("1")) }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	if got := metaKeys(t, db, "a", "b", "c", "d"); fmt.Sprint(got) != "[a]" {
		t.Errorf("committed %v, want [a]", got)
	}
	if st := db.CommitStats(); st.Commits != st.Updates {
		t.Errorf("sequential writers shared commits: %+v", st)
	}
	// Concurrent writers after inline ones: all land (the committer and
	// inline commits never overlap; -race checks).
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			if err := db.Update(ctx, func(tx *Tx) error { return tx.PutMeta(fmt.Sprintf("k%d", i), []byte("v")) }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var keys []string
	for i := range 64 {
		keys = append(keys, fmt.Sprintf("k%d", i))
	}
	if got := metaKeys(t, db, keys...); len(got) != 64 {
		t.Errorf("%d of 64 concurrent writes landed", len(got))
	}
}

// runtimeStack writes the first line of this goroutine's stack ("goroutine N [running]:").
func runtimeStack(b []byte) int {
	n := runtime.Stack(b, false)
	for i := range n {
		if b[i] == '[' {
			return i
		}
	}
	return n
}
