package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Expired returns the finished recordings whose tier's retention has run
// out at now (retention returns 0 for "keep forever"), and those a crash
// left half deleted.
func (s *Store) Expired(ctx context.Context, now time.Time, retention func(tier string) time.Duration) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("record %s: %w", k, err)
			}
			if r.Deleting {
				out = append(out, r.ID)
				return nil
			}
			if !r.Finished {
				return nil // a live recording is never expired
			}
			if keep := retention(r.Meta.Tier); keep > 0 && now.Sub(endTime(&r)) > keep {
				out = append(out, r.ID)
			}
			return ctx.Err()
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: expired: %w", err)
	}
	return out, nil
}

// Delete removes a finished recording: its record is marked first (so it
// disappears from lists and searches at once), then its text, its files,
// and the record. A crash midway leaves the mark, and Expired returns the
// recording again. Live recordings are refused.
func (s *Store) Delete(ctx context.Context, id string) (*Record, error) {
	s.deletes.RLock()
	defer s.deletes.RUnlock()
	b, err := s.lockBlob(id)
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if !b.exists {
		return nil, fmt.Errorf("store: delete %s: %w", id, ErrNotFound)
	}
	var rec *Record
	err = s.update(func(tx *bolt.Tx) error {
		r, err := getRecordTx(tx, id)
		if err != nil {
			return err
		}
		if !r.Finished && !r.Deleting {
			return fmt.Errorf("store: delete %s: recording is live", id)
		}
		r.Deleting = true
		rec = r
		return putRecord(tx, r)
	})
	if err != nil {
		return nil, err
	}
	mu := s.textLock(id)
	mu.Lock()
	err = s.dropTextLocked(id, rec.Start)
	mu.Unlock()
	if err != nil {
		return nil, err
	}
	for _, p := range []string{s.castPath(id), s.metaPath(id), s.sideBlobPath(id)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store: delete %s: %w", id, err)
		}
	}
	if err := s.syncDir(); err != nil {
		return nil, fmt.Errorf("store: delete %s: %w", id, err)
	}
	err = s.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSessions).Delete([]byte(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketByStart).Delete(append(invTime(rec.Start), id...))
	})
	if err != nil {
		return nil, fmt.Errorf("store: delete %s: %w", id, err)
	}
	b.exists = false
	s.evict(b)
	return rec, nil
}
