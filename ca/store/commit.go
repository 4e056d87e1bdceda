package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Group commit. One goroutine (commitLoop, owned by the DB, ended by Close)
// takes the first queued closure, then everything else queued at that
// instant up to MaxBatch, and runs them all in one bbolt write transaction:
// one commit, one pair of fdatasyncs, however many callers. There is no
// timer: at concurrency 1 each Update costs exactly one commit, and under
// load the queue that builds up during a commit becomes the next batch.
//
// A closure that returns an error (or panics) must not take the others
// down, and bbolt has no savepoints, so the transaction is rolled back and
// the batch re-run without that closure, as bbolt's own DB.Batch does. That
// is why closures may run more than once and must be idempotent.

// CommitStats counts the committer's work since Open, for metrics.
type CommitStats struct {
	Commits  uint64 // write transactions committed (each one fsync pair)
	Updates  uint64 // Update closures committed; Updates/Commits is the mean batch
	Failures uint64 // closures that failed or panicked (each costs a rollback and re-run)
	// Conflicts counts etcd transactions re-run because another writer
	// (usually another replica) committed first; always 0 on bbolt.
	Conflicts uint64
}

// CommitStats returns counters of committed work; safe to call anytime.
func (db *DB) CommitStats() CommitStats {
	s := CommitStats{Commits: db.commits.Load(), Updates: db.updates.Load(), Failures: db.failures.Load()}
	if db.etcd != nil {
		s.Conflicts = db.etcd.conflicts.Load()
	}
	return s
}

// call is one Update waiting for the committer.
type call struct {
	ctx  context.Context
	fn   func(*Tx) error
	done chan error // buffered: the committer never blocks on a caller that left
}

// panicked carries a closure's panic to its caller, who re-panics.
type panicked struct{ value any }

func (p panicked) Error() string { return fmt.Sprintf("store: update closure panicked: %v", p.value) }

// Update runs fn in a write transaction and returns once the transaction is
// durable on disk (bbolt fdatasyncs the file before Commit returns), or
// with fn's error unchanged if fn failed, in which case nothing fn did is
// kept.
//
// Concurrent Updates are group-committed: fn shares its transaction with
// other callers' closures. Therefore:
//   - fn may be called more than once (when another closure in its batch
//     fails, the batch is rolled back and re-run). It must be idempotent:
//     no effects outside the transaction, and it must recompute from what
//     it reads in tx rather than from state left by an earlier run. Fields
//     that Tx methods set on records passed in (AuditEvent.Seq, Hash, …)
//     are final only once Update returned nil.
//   - fn runs on the committer goroutine (or, for a lone writer, on the
//     caller's: commitInline) and must not call methods of db (that
//     deadlocks) or block for long (every caller in the batch waits).
//   - a panic in fn is re-raised in the caller's goroutine.
//
// If ctx ends while the call waits, Update returns ctx's error; the write
// may still land, because a closure that already started runs to the end.
// A closure whose ctx ended before its batch started is skipped.
func (db *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	if db.readOnly {
		return fmt.Errorf("store: update: %w", ErrReadOnly)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: update: %w", err)
	}
	c := &call{ctx: ctx, fn: fn, done: make(chan error, 1)}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return fmt.Errorf("store: update: %w", ErrClosed)
	}
	if db.commitInline(c) {
		db.mu.RUnlock()
		return c.result(<-c.done)
	}
	select {
	case db.calls <- c:
	case <-ctx.Done():
		db.mu.RUnlock()
		return fmt.Errorf("store: update: %w", ctx.Err())
	}
	db.mu.RUnlock()

	select {
	case err := <-c.done:
		return c.result(err)
	case <-ctx.Done():
		return fmt.Errorf("store: update: %w", ctx.Err())
	}
}

// result re-raises a closure's panic in the caller's goroutine.
func (c *call) result(err error) error {
	if p, ok := err.(panicked); ok {
		panic(p.value)
	}
	return err
}

// commitInline commits c on the caller's goroutine when the writer is
// alone: the committer is idle, nothing is queued, and the previous batch
// had no company (fewer than lingerAfter writers). That saves two
// goroutine hand-offs (a thread wake-up each) per commit at concurrency 1;
// under concurrent load the committer's batching is left alone. Every rule
// of Update holds as on the committer: the closure runs under the commit
// token, which the committer also takes, so transactions never overlap.
func (db *DB) commitInline(c *call) bool {
	if db.noInline.Load() || db.lastBatch.Load() >= lingerAfter || len(db.calls) > 0 || !db.commitTok.TryLock() {
		return false
	}
	defer db.commitTok.Unlock()
	if len(db.calls) > 0 { // someone queued meanwhile: join the batch instead
		return false
	}
	db.runBatch([]*call{c})
	db.lastBatch.Store(1)
	db.kickTrim()
	return true
}

// commitLoop is the committer. It exits when Close has closed db.calls
// and everything queued before that has been committed and answered.
func (db *DB) commitLoop() {
	defer close(db.exited)
	batch := make([]*call, 0, db.maxBatch)
	last := 0 // size of the previous batch
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for first := range db.calls {
		db.commitTok.Lock() // an inline commit (commitInline) may be running
		batch = append(batch[:0], first)
		// Under concurrent load (the previous batch was shared) linger a
		// moment for writers still on their way: one commit (two fsyncs)
		// then serves more of them. A lone writer never waits.
		linger := last >= lingerAfter
		if linger {
			timer.Reset(commitLinger)
		}
	fill:
		for len(batch) < db.maxBatch {
			if !linger {
				select {
				case c, ok := <-db.calls:
					if !ok {
						break fill
					}
					batch = append(batch, c)
				default:
					break fill
				}
				continue
			}
			select {
			case c, ok := <-db.calls:
				if !ok {
					break fill
				}
				batch = append(batch, c)
				if len(batch) >= last {
					linger = false // as many as last time: go
				}
			case <-timer.C:
				linger = false
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		last = len(batch)
		db.lastBatch.Store(int64(last))
		db.runBatch(batch)
		db.kickTrim()
		db.commitTok.Unlock()
		clear(batch) // drop references to finished calls
	}
}

// Adaptive group commit: after a batch of at least lingerAfter writes, the
// next batch waits up to commitLinger for as many writers as the last one.
// A commit costs two fdatasyncs whose kernel time is CPU the issuers need:
// on the 2-core reference machine a 2 ms linger took issuance at 64
// concurrent clients from ~8,200 to ~10,000 certs/s and lowered p50 and p99
// (fewer, larger commits). A lone writer (c=1) never waits.
const (
	lingerAfter  = 4
	commitLinger = 2 * time.Millisecond
)

// etcdUpdateTimeout bounds one batch on etcd, conflicts and retries
// included.
const etcdUpdateTimeout = time.Minute

// runBatch commits batch, answering every call exactly once.
func (db *DB) runBatch(batch []*call) {
	live := batch
	for {
		// Callers that gave up before their closure ran get nothing done.
		n := 0
		for _, c := range live {
			if err := c.ctx.Err(); err != nil {
				c.done <- fmt.Errorf("store: update: %w", err)
				continue
			}
			live[n] = c
			n++
		}
		live = live[:n]
		if len(live) == 0 {
			return
		}

		failed := -1
		var failErr error
		run := func(tx *Tx) error {
			failed = -1
			for i, c := range live {
				if err := safelyCall(c.fn, tx); err != nil {
					if kerr := tx.kv.Err(); kerr != nil {
						return kerr // the engine's read failed, not the closure
					}
					failed, failErr = i, err
					return err
				}
			}
			return nil
		}
		var err error
		if db.etcd != nil {
			ctx, cancel := context.WithTimeout(context.Background(), etcdUpdateTimeout)
			err = db.etcd.update(ctx, func(kv kvTx) error { return run(&Tx{kv: kv, now: db.now, live: &db.live, certKeep: db.certKeep}) })
			cancel()
			if errors.Is(err, errTooLarge) && len(live) > 1 {
				// More operations than one etcd Txn may carry: halve.
				db.runBatch(live[:len(live)/2])
				db.runBatch(live[len(live)/2:])
				return
			}
			if errors.Is(err, errTooLarge) {
				err = fmt.Errorf("%w: raise the members' --max-txn-ops (and the store's max_txn_ops)", errTooLarge)
			}
		} else {
			err = db.bolt.Update(func(btx *bolt.Tx) error {
				return run(&Tx{kv: boltTx{btx}, now: db.now, live: &db.live})
			})
		}
		if failed >= 0 {
			db.failures.Add(1)
			if p, ok := failErr.(panicked); ok {
				db.log.Error("store: update closure panicked", "panic", fmt.Sprint(p.value))
			}
			live[failed].done <- failErr
			live = append(live[:failed], live[failed+1:]...)
			continue
		}
		if err != nil {
			db.log.Error("store: commit failed", "err", err, "batch", len(live))
			err = fmt.Errorf("store: commit: %w", err)
		} else {
			db.commits.Add(1)
			db.updates.Add(uint64(len(live)))
		}
		for _, c := range live {
			c.done <- err
		}
		return
	}
}

func safelyCall(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicked{value: p}
		}
	}()
	return fn(tx)
}
