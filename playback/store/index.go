package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sshward/sshward/recorder"
)

// Record is what the index holds of one recording.
type Record struct {
	ID        string   `json:"id"`
	Owner     string   `json:"owner"`      // the host that started it (certificate's first name)
	HostNames []string `json:"host_names"` // every name of that certificate
	HostKeyID string   `json:"host_key_id"`
	// Meta is the host's metadata: as started, replaced at finish.
	Meta recorder.Metadata `json:"metadata"`
	// Start orders the recordings (Meta.Start as started, or when the
	// server first heard of it); it never changes, as index keys hold it.
	Start      time.Time `json:"start"`
	Received   time.Time `json:"received"`
	Stored     int64     `json:"stored"` // cast bytes, set at finish
	Finished   bool      `json:"finished"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Signature  string    `json:"signature,omitempty"`
	HostCert   string    `json:"host_cert,omitempty"`
	Generation int       `json:"generation,omitempty"`
	Deleting   bool      `json:"deleting,omitempty"`
}

func putRecord(tx *bolt.Tx, r *Record) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketSessions).Put([]byte(r.ID), raw); err != nil {
		return err
	}
	return tx.Bucket(bucketByStart).Put(append(invTime(r.Start), r.ID...), nil)
}

func getRecordTx(tx *bolt.Tx, id string) (*Record, error) {
	raw := tx.Bucket(bucketSessions).Get([]byte(id))
	if raw == nil {
		return nil, fmt.Errorf("store: %s: %w", id, ErrNotFound)
	}
	r := new(Record)
	if err := json.Unmarshal(raw, r); err != nil {
		return nil, fmt.Errorf("store: record %s: %w", id, err)
	}
	return r, nil
}

func (s *Store) getRecord(id string) (*Record, error) {
	var r *Record
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = getRecordTx(tx, id)
		return err
	})
	return r, err
}

// Get returns the record of a recording (ErrNotFound when there is none or
// it is being deleted). For a live one, Stored is the committed size.
func (s *Store) Get(ctx context.Context, id string) (*Record, error) {
	if err := recorder.CheckSessionID(id); err != nil {
		return nil, fmt.Errorf("store: %w", ErrNotFound)
	}
	r, err := s.getRecord(id)
	if err != nil {
		return nil, err
	}
	if r.Deleting {
		return nil, fmt.Errorf("store: %s: %w", id, ErrNotFound)
	}
	s.liveSize(r)
	return r, nil
}

// liveSize fills a live record's Stored from its blob, if loaded.
func (s *Store) liveSize(r *Record) {
	if r.Finished {
		return
	}
	s.mu.Lock()
	b := s.blobs[r.ID]
	s.mu.Unlock()
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.loaded && b.exists {
		r.Stored = b.size
	}
	b.mu.Unlock()
}

// ListFilter selects recordings; zero fields select everything.
type ListFilter struct {
	User, Host, Tier string
	Since, Until     time.Time       // on Start
	BreakGlass       bool            // only break-glass tier or access-request sessions
	Live             bool            // only recordings not finished
	Flagged          bool            // only recordings that raised a suspicious-activity flag (Metadata.Flags)
	FlaggedLive      map[string]bool // with Flagged: live recordings known to have raised one (their markers)
	IDs              map[string]bool
	Limit            int // default 100
}

// IsBreakGlass reports whether a recording is of break-glass access: the
// break-glass tier or any session bought with an approved access request.
func IsBreakGlass(r *Record) bool {
	return r.Meta.Tier == "break-glass" || r.Meta.RequestID != ""
}

// Match reports whether r passes the filter (all but Limit).
func (f *ListFilter) Match(r *Record) bool {
	switch {
	case r.Deleting,
		f.User != "" && r.Meta.Identity != f.User,
		f.Host != "" && r.Meta.Host != f.Host && r.Owner != f.Host,
		f.Tier != "" && r.Meta.Tier != f.Tier,
		!f.Since.IsZero() && r.Start.Before(f.Since),
		!f.Until.IsZero() && !r.Start.Before(f.Until),
		f.BreakGlass && !IsBreakGlass(r),
		f.Live && r.Finished,
		f.Flagged && len(r.Meta.Flags) == 0 && !(!r.Finished && f.FlaggedLive[r.ID]),
		f.IDs != nil && !f.IDs[r.ID]:
		return false
	}
	return true
}

// List returns matching recordings, newest first.
func (s *Store) List(ctx context.Context, f ListFilter) ([]Record, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		c := tx.Bucket(bucketByStart).Cursor()
		start := []byte(nil)
		if !f.Until.IsZero() {
			start = invTime(f.Until) // later keys are older
		}
		var k []byte
		if start == nil {
			k, _ = c.First()
		} else {
			k, _ = c.Seek(start)
		}
		for n := 0; k != nil && len(out) < f.Limit; k, _ = c.Next() {
			if n++; n%1024 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			id := k[8:]
			if f.IDs != nil && !f.IDs[string(id)] {
				continue
			}
			raw := sessions.Get(id)
			if raw == nil {
				continue
			}
			var r Record
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("store: record %s: %w", id, err)
			}
			if !f.Since.IsZero() && r.Start.Before(f.Since) {
				break // newest first: the rest is older still
			}
			if f.Match(&r) {
				out = append(out, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list: %w", err)
	}
	for i := range out {
		s.liveSize(&out[i])
	}
	return out, nil
}

// Marker is an "m" event of a recording.
type Marker struct {
	Time  float64 `json:"time"`
	Label string  `json:"label"`
}

// Markers returns the recording's markers, as indexed so far.
func (s *Store) Markers(ctx context.Context, id string) ([]Marker, error) {
	out := []Marker{}
	err := s.sdb.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMarkers).Cursor()
		prefix := append([]byte(id), 0)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			v, err := s.vs.open(v)
			if err != nil {
				continue
			}
			if t, label, ok := decodeMarkerValue(v); ok {
				out = append(out, Marker{Time: t, Label: label})
			}
		}
		return nil
	})
	return out, err
}
