package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Online backup (issue 14). Backup takes a consistent copy of the store
// while it serves: the two database files through bbolt read
// transactions, then the files of every recording the index snapshot
// lists. Its point in time is the index snapshot:
//
//   - a recording finished by then is copied whole (its files no longer
//     change; deletions, by retention, wait for the backup to end);
//   - a recording live by then is copied as far as its bytes are committed
//     (fsynced and acknowledged to the host), taken under the recording's
//     lock so that no chunk is half in: restored, it is a live recording of
//     those bytes, and the host that still spools it resumes its upload
//     from there (Start answers the stored size) and finishes it;
//   - a recording started after it is not in the backup.
//
// search.db is copied before index.db: the search index never claims text
// beyond the bytes the backup holds.

// BackupAdd receives one file of a backup: its slash-separated name under
// the store's directory, its size and mode, and write, which writes
// exactly size bytes.
type BackupAdd func(name string, size int64, mode fs.FileMode, write func(io.Writer) error) error

// BackupReport says what a backup holds.
type BackupReport struct {
	// Audit is the audit chain of the index snapshot, verified.
	Audit AuditReport `json:"audit"`
	// Finished counts the finished recordings whose files are in it;
	// Remote those whose files were not here (archived to object storage).
	Finished int `json:"finished"`
	Remote   int `json:"remote,omitempty"`
	// Live lists the recordings that were live at the snapshot, with the
	// committed bytes the backup holds.
	Live []LiveCopy `json:"live,omitempty"`
}

// LiveCopy is a live recording in a backup.
type LiveCopy struct {
	ID        string `json:"id"`
	CastBytes int64  `json:"cast_bytes"`
	BlobBytes int64  `json:"blob_bytes,omitempty"`
}

// Backup writes a consistent copy of the store through add (see above).
// The databases are first copied into temporary files in the store's
// directory, so that no read transaction stays open while add is slow. An
// audit chain that does not verify is refused.
func (s *Store) Backup(ctx context.Context, add BackupAdd) (*BackupReport, error) {
	s.deletes.Lock() // Delete waits: every file the snapshot lists stays
	defer s.deletes.Unlock()
	rep := &BackupReport{}
	if err := s.backupDB(ctx, s.sdb, searchDB, add, nil); err != nil {
		return nil, err
	}
	var recs []*Record
	err := s.backupDB(ctx, s.db, indexDB, add, func(tx *bolt.Tx) error {
		var err error
		if rep.Audit, err = verifyAuditTx(tx); err != nil {
			return fmt.Errorf("the audit chain does not verify, not backing it up: %w", err)
		}
		return tx.Bucket(bucketSessions).ForEach(func(_, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			recs = append(recs, &r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if r.Finished {
			n, err := s.backupFinished(r.ID, add)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				rep.Remote++
			} else {
				rep.Finished++
			}
			continue
		}
		lc, err := s.backupLive(r.ID, add)
		if err != nil {
			return nil, err
		}
		rep.Live = append(rep.Live, lc)
	}
	return rep, nil
}

// backupDB copies db into a temporary file in one read transaction (in
// which also runs, when set), then hands it to add as name.
func (s *Store) backupDB(ctx context.Context, db *bolt.DB, name string, add BackupAdd, also func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.cfg.Dir, ".backup-"+name+"-*.tmp")
	if err != nil {
		return fmt.Errorf("store: backup %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if _, err := tx.WriteTo(tmp); err != nil {
			return err
		}
		if also != nil {
			return also(tx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: backup %s: %w", name, err)
	}
	return addFile(add, name, tmp, -1)
}

// backupFinished adds a finished recording's files; it answers how many
// were here.
func (s *Store) backupFinished(id string, add BackupAdd) (int, error) {
	n := 0
	for _, p := range []string{s.castPath(id), s.metaPath(id), s.sideBlobPath(id)} {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("store: backup %s: %w", id, err)
		}
		err = addFile(add, "blobs/"+filepath.Base(p), f, -1)
		f.Close()
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// backupLive copies a live recording's committed bytes under its lock
// into temporary files (appends wait only for a local copy, not for add),
// then adds them.
func (s *Store) backupLive(id string, add BackupAdd) (LiveCopy, error) {
	lc := LiveCopy{ID: id}
	b, err := s.lockBlob(id)
	if err != nil {
		return lc, fmt.Errorf("store: backup %s: %w", id, err)
	}
	lc.CastBytes, lc.BlobBytes = b.size, b.bsize
	cast, err := s.copyPrefix(s.castPath(id), b.size)
	var side *os.File
	if err == nil && b.bsize > 0 {
		side, err = s.copyPrefix(s.sideBlobPath(id), b.bsize)
	}
	b.mu.Unlock()
	for _, f := range []*os.File{cast, side} {
		if f != nil {
			defer os.Remove(f.Name())
			defer f.Close()
		}
	}
	if err != nil {
		return lc, fmt.Errorf("store: backup %s: %w", id, err)
	}
	if err := addFile(add, "blobs/"+id+".cast", cast, lc.CastBytes); err != nil {
		return lc, err
	}
	if side != nil {
		if err := addFile(add, "blobs/"+id+".blob", side, lc.BlobBytes); err != nil {
			return lc, err
		}
	}
	return lc, nil
}

// copyPrefix copies the first n bytes of path into a temporary file.
func (s *Store) copyPrefix(path string, n int64) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(s.cfg.Dir, ".backup-live-*.tmp")
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(tmp, io.NewSectionReader(src, 0, n)); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	return tmp, nil
}

// addFile hands f from its start to add: size bytes (-1: all of it).
func addFile(add BackupAdd, name string, f *os.File, size int64) error {
	if size < 0 {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		size = fi.Size()
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return add(name, size, 0o600, func(w io.Writer) error {
		n, err := io.Copy(w, io.LimitReader(f, size))
		if err == nil && n != size {
			err = fmt.Errorf("store: backup %s: %d of %d bytes", name, n, size)
		}
		return err
	})
}
