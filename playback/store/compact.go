package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Compact rewrites index.db and search.db in dir, a store that no process
// has open, with only their live records, and removes the search index of
// an older format (text.db; Open rebuilds what it held from the casts).
// bbolt keeps the bytes of deleted records in free pages until it reuses
// them: after Delete the text of a purged recording may still be read from
// the files with grep. Compact copies the live records into a new file,
// fsyncs it, and renames it over the old one, so that those bytes leave the
// index. It returns ErrLocked while a server holds the store.
func Compact(ctx context.Context, dir string) error {
	for _, name := range []string{indexDB, searchDB} {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("store: compact: %w", err)
		}
		if err := compactFile(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Join(dir, legacyTextDB)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: compact: %w", err)
	}
	return nil
}

func compactFile(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil // nothing to compact (a store of an older version has no search.db yet)
	}
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("store: compact %s: %w", path, ErrLocked)
	}
	if err != nil {
		return fmt.Errorf("store: compact %s: %w", path, err)
	}
	defer src.Close()
	tmp := path + ".compact"
	_ = os.Remove(tmp) // left by an earlier, interrupted compaction
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("store: compact %s: %w", path, err)
	}
	err = bolt.Compact(dst, src, 64<<20)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("store: compact %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		return fmt.Errorf("store: compact %s: %w", path, err)
	}
	return nil
}
