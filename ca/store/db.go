package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Defaults for zero Options fields.
const (
	DefaultMaxBatch    = 256
	DefaultOpenTimeout = time.Second
	// maxMaxBatch keeps a misconfigured MaxBatch from building transactions
	// so large that one slow commit stalls every caller.
	maxMaxBatch = 1 << 16
)

// schemaVersion is written into new files and checked on open. Bump it
// (with a migration) when the meaning of stored bytes changes.
const schemaVersion = 1

// Bucket names. The layout is part of the file format.
var (
	bucketUsers     = []byte("users")          // name → JSON User
	bucketSessions  = []byte("sessions")       // sha256 hex of token → JSON Session
	bucketCerts     = []byte("certs")          // serial (uint64 BE) → JSON CertRecord
	bucketCertKeyID = []byte("certs_by_keyid") // uvarint(len) keyID serial → empty
	bucketTokens    = []byte("join_tokens")    // sha256 hex of token → JSON JoinToken
	bucketRevoked   = []byte("revocations")    // tier → {generation, serial/, keyid/}
	bucketAudit     = []byte("audit")          // seq (uint64 BE) → JSON AuditEvent
	bucketMeta      = []byte("meta")           // caller's key → caller's bytes
	bucketInternal  = []byte("internal")       // schema version, audit head

	allBuckets = [][]byte{bucketUsers, bucketSessions, bucketCerts, bucketCertKeyID,
		bucketTokens, bucketRevoked, bucketAudit, bucketMeta, bucketInternal, bucketRequests, bucketClaims,
		bucketUsedTokens, bucketOnCall, bucketLoginFailures}

	keySchema    = []byte("schema")         // uint64 BE
	keyAuditHead = []byte("audit_head")     // uint64 BE seq ‖ hex hash
	keySerialMax = []byte("serial_max")     // uint64 BE: highest serial ever recorded
	keyAuditCkpt = []byte("audit_archived") // JSON AuditCheckpoint
)

// Options configure Open. The zero value of every field but Path is usable.
type Options struct {
	// Path of the bbolt file. Open creates it with mode 0600 when missing
	// (unless ReadOnly) and tightens an existing file to 0600.
	Path string
	// Now stamps records whose creation time the caller left zero (audit
	// Time, CreatedAt, IssuedAt, revocation At) and User.UpdatedAt.
	// Defaults to time.Now.
	Now func() time.Time
	// Logger receives commit failures and closure panics. Defaults to
	// discarding.
	Logger *slog.Logger
	// MaxBatch bounds how many Update closures share one transaction and
	// one fsync. Zero means DefaultMaxBatch.
	MaxBatch int
	// OpenTimeout bounds the wait for the file lock (bbolt uses flock).
	// Zero means DefaultOpenTimeout. When it runs out Open returns ErrLocked.
	OpenTimeout time.Duration
	// Etcd, when set, keeps the store in an etcd cluster instead of a
	// file (Path is then unused): several CA replicas may share it. See
	// kv_etcd.go for how transactions stay serializable.
	Etcd *EtcdOptions
	// ReadOnly opens the file with a shared lock for reading only (e.g.
	// `audit verify` on a copy). Update then returns ErrReadOnly.
	ReadOnly bool
}

// Check reports the first invalid field.
func (o Options) Check() error {
	switch {
	case o.Path == "" && o.Etcd == nil:
		return fmt.Errorf("store: options: Path is empty: %w", ErrInvalid)
	case o.MaxBatch < 0 || o.MaxBatch > maxMaxBatch:
		return fmt.Errorf("store: options: MaxBatch %d out of range [0, %d]: %w", o.MaxBatch, maxMaxBatch, ErrInvalid)
	case o.OpenTimeout < 0:
		return fmt.Errorf("store: options: OpenTimeout %v is negative: %w", o.OpenTimeout, ErrInvalid)
	}
	return nil
}

// DB is the CA's store: one bbolt file, one committer goroutine that
// group-commits Update closures, any number of concurrent readers.
type DB struct {
	bolt     *bolt.DB
	etcd     *etcdEngine   // instead of bolt when Options.Etcd is set
	certKeep time.Duration // EtcdOptions.CertKeep
	path     string
	now      func() time.Time
	log      *slog.Logger
	readOnly bool
	maxBatch int

	commits, updates, failures atomic.Uint64 // see CommitStats
	live                       liveMemo      // see SessionNotRevoked

	calls  chan *call    // Update → committer; closed by Close
	exited chan struct{} // closed when the committer has returned

	// The trimmer (trim.go); nil channels in a read-only DB.
	trimKick   chan struct{}
	trimStop   chan struct{}
	trimExited chan struct{}
	lastTrim   atomic.Int64  // UnixNano of the last kick
	trims      atomic.Uint64 // times the mapped pages were dropped

	// commitTok is held by whoever runs a write transaction: the committer
	// for a batch, or a lone writer committing inline (commitInline).
	commitTok sync.Mutex
	lastBatch atomic.Int64 // size of the last committed batch
	noInline  atomic.Bool  // tests that park the committer turn commitInline off

	mu     sync.RWMutex // guards closed; Update holds it for reading while it enqueues
	closed bool
}

// Open opens (or creates) the store at o.Path. It returns an error wrapping
// ErrLocked when another process holds the file for longer than
// o.OpenTimeout (or ctx's deadline, if sooner).
func Open(ctx context.Context, o Options) (*DB, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", o.Path, err)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
		if o.Etcd != nil {
			o.MaxBatch = defaultEtcdMaxBatch
		}
	}
	if o.Etcd != nil {
		return openEtcdDB(ctx, o)
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	// bbolt cannot be interrupted while it waits for flock, so fold the
	// context's deadline into its timeout instead.
	timeout := o.OpenTimeout
	if dl, ok := ctx.Deadline(); ok {
		if rem := time.Until(dl); rem < timeout {
			timeout = rem
		}
		if timeout <= 0 {
			return nil, fmt.Errorf("store: open %s: %w", o.Path, context.DeadlineExceeded)
		}
	}
	bo := &bolt.Options{
		Timeout:  timeout,
		ReadOnly: o.ReadOnly,
		// etcd's settings: the hashmap freelist stays fast on large files,
		// and not syncing the freelist saves pages per commit (it is
		// rebuilt by a scan on open; durability of data is unaffected).
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
		NoStatistics:   true,
	}
	if !o.ReadOnly {
		// Readers block a writer that must grow the mmap; mapping ahead
		// (address space only; the file is not grown) makes that rare.
		bo.InitialMmapSize = 256 << 20
	}
	bdb, err := bolt.Open(o.Path, 0o600, bo)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: %w", o.Path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", o.Path, err)
	}
	db := &DB{
		bolt:     bdb,
		path:     o.Path,
		now:      o.Now,
		log:      o.Logger,
		readOnly: o.ReadOnly,
		maxBatch: o.MaxBatch,
		exited:   make(chan struct{}),
	}
	if err := db.init(); err != nil {
		_ = bdb.Close()
		return nil, err
	}
	if o.ReadOnly {
		close(db.exited)
		return db, nil
	}
	// The buffer lets callers queue a full batch while the previous one
	// commits.
	db.calls = make(chan *call, o.MaxBatch)
	db.trimKick, db.trimStop, db.trimExited = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	db.lastTrim.Store(time.Now().UnixNano())
	go db.trimLoop()
	go db.commitLoop()
	return db, nil
}

// init tightens the file mode, creates the buckets and checks the schema.
func (db *DB) init() error {
	if db.readOnly {
		return db.bolt.View(func(btx *bolt.Tx) error { return checkSchema(btx) })
	}
	fi, err := os.Stat(db.path)
	if err != nil {
		return fmt.Errorf("store: open %s: %w", db.path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		db.log.Warn("store: tightening file mode", "path", db.path, "mode", fi.Mode().Perm().String())
		if err := os.Chmod(db.path, 0o600); err != nil {
			return fmt.Errorf("store: open %s: chmod: %w", db.path, err)
		}
	}
	return db.bolt.Update(func(btx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := btx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("store: open %s: create bucket %s: %w", db.path, name, err)
			}
		}
		in := btx.Bucket(bucketInternal)
		if in.Get(keySchema) == nil {
			return in.Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion))
		}
		return checkSchema(btx)
	})
}

func checkSchema(btx *bolt.Tx) error {
	in := btx.Bucket(bucketInternal)
	if in == nil {
		return nil // an empty file: nothing written yet
	}
	v := in.Get(keySchema)
	if v == nil {
		return nil
	}
	if len(v) != 8 || binary.BigEndian.Uint64(v) > schemaVersion {
		return fmt.Errorf("store: open: schema %x, this build reads up to %d: %w", v, schemaVersion, ErrSchema)
	}
	return nil
}

// Path returns the file the DB was opened from ("" on etcd).
func (db *DB) Path() string { return db.path }

// Describe names where the store lives, for logs and messages: its file,
// or its etcd endpoints and prefix.
func (db *DB) Describe() string {
	if db.etcd != nil {
		return db.etcd.describe()
	}
	return db.path
}

// Shared reports whether other processes may write this store while it is
// open (etcd, shared by CA replicas). Caches kept above the store must
// then not assume that every change passes through this process: a bbolt
// file is locked by its one writer, an etcd cluster is not.
func (db *DB) Shared() bool { return db.etcd != nil }

// errEtcdSnapshot is what Snapshot and WriteSnapshot answer on etcd.
var errEtcdSnapshot = fmt.Errorf("store: backup: the CA store is on etcd, which this command cannot copy: save a snapshot of the cluster with `etcdctl snapshot save FILE`: %w", ErrUnsupported)

// Close waits for every queued Update to commit and reply, then closes the
// file. Updates submitted after Close began return ErrClosed. Close is
// idempotent.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	if db.calls != nil {
		close(db.calls)
	}
	db.mu.Unlock()
	<-db.exited
	if db.trimStop != nil {
		close(db.trimStop)
		<-db.trimExited
	}
	if db.etcd != nil {
		if err := db.etcd.close(); err != nil {
			return fmt.Errorf("store: close: %w", err)
		}
		return nil
	}
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// View runs fn in a read-only transaction that sees every Update that
// returned before View began. fn's error is returned unchanged. The *Tx and
// anything borrowed from it are valid only inside fn; records returned by
// Tx methods are copies and may be kept.
func (db *DB) View(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: view: %w", err)
	}
	if db.etcd != nil {
		db.mu.RLock()
		closed := db.closed
		db.mu.RUnlock()
		if closed {
			return fmt.Errorf("store: view: %w", ErrClosed)
		}
		return db.etcd.view(ctx, func(kv kvTx) error { return fn(&Tx{kv: kv, now: db.now, live: &db.live, certKeep: db.certKeep}) })
	}
	err := db.bolt.View(func(btx *bolt.Tx) error {
		return fn(&Tx{kv: boltTx{btx}, now: db.now, live: &db.live})
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("store: view: %w", ErrClosed)
	}
	return err
}

// Snapshot writes a consistent copy of the whole file to path (mode 0600)
// without stopping writers, e.g. for backups or `audit verify` on a copy.
func (db *DB) Snapshot(ctx context.Context, path string) error {
	if db.etcd != nil {
		return errEtcdSnapshot
	}
	return db.View(ctx, func(tx *Tx) error {
		if err := tx.kv.(boltTx).tx.CopyFile(path, 0o600); err != nil {
			return fmt.Errorf("store: snapshot to %s: %w", path, err)
		}
		return nil
	})
}

// WriteSnapshot writes a consistent copy of the whole store file to w
// without stopping writers (one read transaction), for online backups, and
// returns the bytes written.
func (db *DB) WriteSnapshot(ctx context.Context, w io.Writer) (int64, error) {
	if db.etcd != nil {
		return 0, errEtcdSnapshot
	}
	var n int64
	err := db.View(ctx, func(tx *Tx) error {
		var err error
		if n, err = tx.kv.(boltTx).tx.WriteTo(w); err != nil {
			return fmt.Errorf("store: snapshot: %w", err)
		}
		return nil
	})
	return n, err
}

// openEtcdDB opens the store on an etcd cluster: checks (or writes) the
// schema version and starts the committer. There is no file, lock or
// trimmer; replicas may open the same prefix at once.
func openEtcdDB(ctx context.Context, o Options) (*DB, error) {
	if o.ReadOnly {
		return nil, fmt.Errorf("store: open %s: read-only applies to files: %w", strings.Join(o.Etcd.Endpoints, ","), ErrInvalid)
	}
	e, err := openEtcd(ctx, o.Etcd, o.Now)
	if err != nil {
		return nil, err
	}
	db := &DB{etcd: e, now: o.Now, log: o.Logger, maxBatch: o.MaxBatch, exited: make(chan struct{}), certKeep: o.Etcd.CertKeep}
	if db.certKeep <= 0 {
		db.certKeep = DefaultCertKeep
	}
	err = e.update(ctx, func(kv kvTx) error {
		in := kv.Bucket(bucketInternal)
		if v := in.Get(keySchema); kv.Err() == nil && v == nil {
			return in.Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion))
		} else if v != nil && (len(v) != 8 || binary.BigEndian.Uint64(v) > schemaVersion) {
			return fmt.Errorf("store: open %s: schema %x, this build reads up to %d: %w", e.describe(), v, schemaVersion, ErrSchema)
		}
		return nil
	})
	if err != nil {
		_ = e.close()
		if !errors.Is(err, ErrSchema) {
			err = fmt.Errorf("store: open %s: %w", e.describe(), err)
		}
		return nil, err
	}
	db.calls = make(chan *call, o.MaxBatch)
	go db.commitLoop()
	return db, nil
}
