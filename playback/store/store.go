package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Buckets of the index.
var (
	bucketSessions = []byte("sessions")   // id → Record JSON
	bucketByStart  = []byte("by_start")   // invTime(start) ‖ id → empty: newest first
	bucketLines    = []byte("lines")      // id ‖ 0 ‖ seq → time ‖ code ‖ text
	bucketPostings = []byte("postings")   // word ‖ 0 ‖ invTime(start) ‖ id ‖ 0 ‖ seq → empty
	bucketMarkers  = []byte("markers")    // id ‖ 0 ‖ seq → time ‖ 'm' ‖ label
	bucketIndexing = []byte("indexstate") // id → indexState JSON
	bucketAudit    = []byte("audit")      // seq → AuditEvent JSON
	bucketMeta     = []byte("meta")       // audit head, schema
	allBuckets     = [][]byte{bucketSessions, bucketByStart, bucketLines, bucketPostings, bucketMarkers, bucketIndexing, bucketAudit, bucketMeta}
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
	db      *bolt.DB
	blobDir string
	writers atomic.Int32 // write transactions in flight, see update
	idx     *indexer

	mu     sync.Mutex       // guards the fields below
	blobs  map[string]*blob // recordings touched while live
	closed bool
}

// Open opens (creating) the store and starts its indexer, which catches up
// with any recording a crash left unindexed.
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
	db, err := bolt.Open(filepath.Join(cfg.Dir, "index.db"), 0o600, &bolt.Options{
		Timeout: time.Second, NoSync: cfg.InsecureSkipSync, NoFreelistSync: true,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	db.MaxBatchDelay = 2 * time.Millisecond
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open: %w", err)
	}
	s := &Store{cfg: cfg, db: db, blobDir: blobDir, blobs: map[string]*blob{}}
	s.idx = newIndexer(s)
	if err := s.idx.resume(ctx); err != nil {
		db.Close()
		return nil, err
	}
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
	blobs := s.blobs
	s.blobs = map[string]*blob{}
	s.mu.Unlock()
	s.idx.stop()
	var errs []error
	for _, b := range blobs {
		b.mu.Lock()
		if b.f != nil {
			errs = append(errs, b.f.Close())
			b.f = nil
		}
		b.mu.Unlock()
	}
	errs = append(errs, s.db.Close())
	return errors.Join(errs...)
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
