// Package store is the CA's embedded database: one bbolt file holding
// local users, login sessions, issued certificates, one-time join tokens,
// per-tier revocations, a hash-chained audit log and small settings.
//
// # Happy path
//
//	db, err := store.Open(ctx, store.Options{Path: filepath.Join(dir, "ca.db")})
//	if errors.Is(err, store.ErrLocked) { … another sshward-ca owns the file … }
//	defer db.Close()
//
//	// Issue: record the certificate and its audit event together, before
//	// the certificate is handed out. Update returns once the commit is on disk.
//	err = db.Update(ctx, func(tx *store.Tx) error {
//		if err := tx.PutCert(&store.CertRecord{Serial: serial, KeyID: keyID, Kind: store.CertKindUser, …}); err != nil {
//			return err
//		}
//		return tx.AppendAudit(&store.AuditEvent{Type: "cert.issue", Actor: user, Serial: serial, KeyID: keyID})
//	})
//
//	// Read: any number of concurrent readers.
//	err = db.View(ctx, func(tx *store.Tx) error {
//		set, err := tx.Revocations("production") // build the KRL from set
//		…
//	})
//
//	rep, err := db.VerifyAudit(ctx) // *store.ChainError names the first bad seq
//
// # Group commit
//
// Update closures from concurrent callers are run together in one bbolt
// transaction and one fsync by a single committer goroutine, with no added
// delay: what queued up during the previous commit forms the next batch
// (at most Options.MaxBatch closures). A failing closure is taken out and
// the batch re-run, so closures must be idempotent; see DB.Update.
// DB.CommitStats reports commits and the mean batch size.
//
// # Durability
//
// bbolt writes the pages, fdatasyncs, writes the meta page and fdatasyncs
// again before Commit returns; Update replies only after that. An
// acknowledged Update therefore survives a process kill and (given honest
// disks) a power cut.
//
// # Audit chain
//
// Each record's Hash is SHA-256 over its PrevHash and a fixed,
// length-prefixed encoding of its fields (see AuditHash), and the latest
// (seq, hash) is kept apart from the log, so VerifyAudit detects an edited,
// deleted or truncated record.
//
// # Secrets
//
// Session and join tokens are stored under TokenID(token) (SHA-256 hex),
// never in clear. Password hashes and TOTP secrets are stored (the file is
// 0600) but never put in error text.
//
// # Engines: bbolt (default) and etcd
//
// Everything above is written against a small transaction interface
// (kv.go: buckets of ordered keys, nested buckets, cursors, expiring puts)
// with two engines. bbolt (kv_bolt.go) is the default: one file, one
// writer process, group commit, unchanged file format and speed.
// Options.Etcd selects etcd (kv_etcd.go), for several CA replicas on one
// cluster: each Update is an optimistic serializable transaction (reads at
// one revision, commit compares the ModRevision of every key and key range
// read, a conflict re-runs the batch), so what must happen once (claims,
// join tokens, votes, TOTP steps, the audit head) happens once across
// replicas; group commit still batches each replica's closures into one
// etcd Txn (split to the cluster's --max-txn-ops). Why this split rather
// than one engine: bbolt's one-fsync group commit is what makes a single
// CA fast (store-level issuance records at 64 writers: bbolt about 5×
// one replica on a loopback etcd cluster; see BenchmarkEtcdIssueRecord),
// and etcd is what makes a CA survive the loss of a machine; the
// records and their rules are the same code on both. On etcd the
// SessionNotRevoked memo stays correct (it caches a decode of the bytes
// read, not what they say), the CA's session cache is off (DB.Shared) and
// revocation watchers are woken by an etcd watch (OnRevocationsChanged).
// Snapshot and WriteSnapshot refuse etcd (use etcdctl snapshot save).
//
// Values are JSON in buckets; the bucket layout and JSON field names are
// the file format (schema version 1).
package store
