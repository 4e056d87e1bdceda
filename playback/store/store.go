package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sshward/sshward/recorder/atrest"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Buckets of index.db: what ingest and the read API need.
var (
	bucketSessions = []byte("sessions") // id → Record JSON
	bucketByStart  = []byte("by_start") // invTime(start) ‖ id → empty: newest first
	bucketAudit    = []byte("audit")    // seq → AuditEvent JSON
	bucketMeta     = []byte("meta")     // audit head
	indexBuckets   = [][]byte{bucketSessions, bucketByStart, bucketAudit, bucketMeta}
)

// Buckets of search.db, the search index (see indexer.go). It is a file of
// its own so that indexing, whose transactions are large, never holds up
// ingest's small ones (bbolt has one writer per file).
var (
	bucketSegments = []byte("segments")   // docKey(start, id) ‖ seg → segment head (segment.go)
	bucketBlocks   = []byte("blocks")     // docKey(start, id) ‖ seg ‖ block → compressed lines
	bucketMarkers  = []byte("markers")    // id ‖ 0 ‖ seq → time ‖ 'm' ‖ label
	bucketIndexing = []byte("indexstate") // id → indexState JSON
	searchBuckets  = [][]byte{bucketSegments, bucketBlocks, bucketMarkers, bucketIndexing}
)

// File names in Config.Dir. legacyTextDB is the search index of earlier
// versions (a line per key, a key per word, recording and batch: larger than
// the casts); it is removed at start and its recordings indexed again.
const (
	indexDB      = "index.db"
	searchDB     = "search.db"
	legacyTextDB = "text.db"
)

// Config configures Open.
type Config struct {
	// Dir holds blobs/ and index.db; created 0700 if missing. Required.
	Dir string
	// Now is the clock of records and audit events; default time.Now.
	Now func() time.Time
	// Logger receives recoveries and indexing failures; default discards.
	Logger *slog.Logger
	// InsecureSkipSync skips every fsync. A crash may then lose bytes the
	// server acknowledged: only for benchmarks that measure something else
	// (search over generated recordings).
	InsecureSkipSync bool
	// MaxLinesPerSession bounds the text indexed per recording (default
	// 1,000,000 lines), so that one enormous output cannot swamp the index.
	MaxLinesPerSession int
	// IndexingGate, when set, holds background indexing (catch-up and new
	// bytes alike; the start-up scan that counts what is behind still runs)
	// until it is closed: tests use it to watch a store whose search index is
	// behind. Nil: indexing starts at once.
	IndexingGate <-chan struct{}
	// Keys, when it has recipients, encrypts every cast and side blob
	// written from now on (recorder/atrest); its identities decrypt them,
	// and the encrypted files of earlier keys they hold. Nil: files are
	// written in plaintext (files already encrypted still need Keys to be
	// read).
	Keys *atrest.Keys
}

// Check names the first bad field.
func (c *Config) Check() error {
	if c.Dir == "" {
		return errors.New("store: Config.Dir is required")
	}
	if c.MaxLinesPerSession < 0 {
		return errors.New("store: Config.MaxLinesPerSession must not be negative")
	}
	return nil
}

// Store is the recordings and their index. Safe for concurrent use.
type Store struct {
	cfg     Config
	db      *bolt.DB // index.db: sessions, audit
	sdb     *bolt.DB // search.db: the search index
	blobDir string
	writers atomic.Int32 // write transactions in flight on db, see update
	idx     *indexer
	vs      *valueSealer // search.db's values, with Config.Keys (searchkey.go)

	// textLocks serialize, per recording (by a hash of its id), the
	// indexer's batches with Delete, which spans both files: a batch checks
	// in index.db that the recording is still there, at the generation it
	// read, and writes text.db under the same lock.
	textLocks [64]sync.Mutex

	// deletes is held shared by Delete and exclusively by Backup, so that
	// the files of every recording a backup's index snapshot lists stay
	// until it has copied them (backup.go).
	deletes sync.RWMutex

	mu     sync.Mutex       // guards the fields below
	blobs  map[string]*blob // recordings touched while live
	closed bool
}

// Open opens (creating) the store and starts its indexer. It reads no more
// of the index files than bbolt's meta and freelist pages, whatever their
// size, so that a server is ready within moments of its start: the search
// for recordings left unindexed (by a crash, a full disk, or an index of an
// older format, which is removed and rebuilt from the casts) runs in the
// background (IndexStatus).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxLinesPerSession == 0 {
		cfg.MaxLinesPerSession = 1_000_000
	}
	blobDir := filepath.Join(cfg.Dir, "blobs")
	if err := os.MkdirAll(blobDir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	db, err := openBolt(filepath.Join(cfg.Dir, indexDB), cfg, indexBuckets)
	if err != nil {
		return nil, err
	}
	vs, err := prepareSearchKey(cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	sdb, err := openBolt(filepath.Join(cfg.Dir, searchDB), cfg, searchBuckets)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{cfg: cfg, db: db, sdb: sdb, vs: vs, blobDir: blobDir, blobs: map[string]*blob{}}
	s.idx = newIndexer(s)
	go s.idx.run()
	return s, nil
}

// Close stops the indexer and closes the index and every open blob.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.blobs = map[string]*blob{}
	s.mu.Unlock()
	s.idx.stop()
	return errors.Join(s.db.Close(), s.sdb.Close())
}

// boltOptions are those of every index file. The freelist is written with
// every commit (NoFreelistSync false) so that opening a file reads its
// freelist page instead of every page of the file (bbolt rebuilds a freelist
// it did not write by walking the whole file: minutes for gigabytes), and so
// that a commit that fails (a full disk) reloads it from that page instead
// of walking the file again, holding the writer lock. The map freelist
// keeps allocation fast in a file with many free pages.
func boltOptions(cfg Config) *bolt.Options {
	return &bolt.Options{Timeout: time.Second, NoSync: cfg.InsecureSkipSync, FreelistType: bolt.FreelistMapType}
}

func openBolt(path string, cfg Config, buckets [][]byte) (*bolt.DB, error) {
	// A file an earlier version wrote without its freelist is walked once
	// here, and its freelist written: later starts read only that.
	db, err := bolt.Open(path, 0o600, boltOptions(cfg))
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	db.MaxBatchDelay = 2 * time.Millisecond
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}

// textLock returns the lock of a recording's text (see Store.textLocks).
func (s *Store) textLock(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &s.textLocks[h.Sum32()%uint32(len(s.textLocks))]
}

// update runs fn in a write transaction. A lone writer commits at once;
// concurrent writers share commits (bolt's Batch), which turns many
// recordings starting or finishing together into few fsyncs. fn may run
// more than once (Batch retries it alone after a failure): it must be
// idempotent.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	n := s.writers.Add(1)
	defer s.writers.Add(-1)
	if n == 1 {
		return s.db.Update(fn)
	}
	return s.db.Batch(fn)
}

func (s *Store) castPath(id string) string { return filepath.Join(s.blobDir, id+".cast") }
func (s *Store) metaPath(id string) string { return filepath.Join(s.blobDir, id+".json") }

// invTime orders keys newest first.
func invTime(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, math.MaxUint64-uint64(t.UnixNano()))
}

func (s *Store) sync(f *os.File) error {
	if s.cfg.InsecureSkipSync {
		return nil
	}
	return f.Sync()
}

func (s *Store) syncDir() error {
	if s.cfg.InsecureSkipSync {
		return nil
	}
	d, err := os.Open(s.blobDir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
