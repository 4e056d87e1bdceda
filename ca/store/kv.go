package store

import "time"

// The store's records live in buckets of ordered keys, as bbolt keeps
// them. Everything above this file (users, sessions, certs, audit, …) is
// written against the small interface below, which two engines implement:
//
//   - bbolt (kv_bolt.go): one file, the default. The interface is a thin
//     wrapper over *bolt.Tx and *bolt.Bucket; group commit (commit.go)
//     batches closures into one bbolt transaction and one fsync pair.
//   - etcd (kv_etcd.go): a cluster shared by several CA replicas. A
//     transaction reads at one revision and commits with a comparison on
//     every key and key range it read; a conflict re-runs it.
//
// Buckets nest (revocations keep one bucket per tier). A read that fails
// inside the etcd engine (the cluster is unreachable) poisons the
// transaction: the read answers "absent" and View/Update return the
// engine's error instead of the closure's, so a closure never acts on a
// read that did not happen.

// kvTx is one transaction of an engine.
type kvTx interface {
	// Bucket returns a top-level bucket, or nil when it does not exist.
	Bucket(name []byte) kvBucket
	// Writable reports whether the transaction may write.
	Writable() bool
	// Err is the read failure that poisoned the transaction, if any
	// (always nil for bbolt, whose reads cannot fail).
	Err() error
}

// kvBucket is an ordered map of byte keys to byte values, plus nested
// buckets. Values returned by Get and cursors are valid only inside the
// transaction and must not be modified.
type kvBucket interface {
	Get(key []byte) []byte
	// Exists reports whether key is present, where it almost never is
	// (a fresh serial). The etcd engine does not ask the cluster inside a
	// write transaction: it assumes absence and checks it at commit,
	// where a wrong guess re-runs the transaction, which then reads it.
	Exists(key []byte) bool
	Put(key, value []byte) error
	// PutExpiring is Put for a record that no one needs after at (plus
	// the engine's grace): etcd attaches a shared lease so the cluster
	// forgets it by itself; bbolt keeps it until the store's own cleanup.
	PutExpiring(key, value []byte, at time.Time) error
	Delete(key []byte) error
	// Bucket returns a nested bucket, or nil when it does not exist.
	Bucket(name []byte) kvBucket
	CreateBucketIfNotExists(name []byte) (kvBucket, error)
	Cursor() kvCursor
	// AppendOnly hints that keys are only ever appended in increasing
	// order (serials, audit seqs), so pages may be filled completely.
	AppendOnly()
}

// kvCursor walks a bucket in key order. Every move returns a nil key past
// either end. A cursor does not see writes made after it was positioned
// (callers collect keys first and write afterwards).
type kvCursor interface {
	First() (key, value []byte)
	Last() (key, value []byte)
	Next() (key, value []byte)
	Prev() (key, value []byte)
	Seek(seek []byte) (key, value []byte)
}
