package store

import (
	"context"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// SnapshotFiles are the store's database files, in the order WriteSnapshot
// takes them; a backup holds a snapshot of each in place of the live file.
var SnapshotFiles = []string{indexDB, searchDB}

// WriteSnapshot writes a consistent copy of one database file of the store
// (a name in SnapshotFiles) to w in one read transaction, without stopping
// writers, and returns the bytes written.
func (s *Store) WriteSnapshot(ctx context.Context, name string, w io.Writer) (int64, error) {
	var db *bolt.DB
	switch name {
	case indexDB:
		db = s.db
	case searchDB:
		db = s.sdb
	default:
		return 0, fmt.Errorf("store: snapshot: no database %q", name)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var n int64
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("store: snapshot %s: %w", name, err)
	}
	return n, nil
}
