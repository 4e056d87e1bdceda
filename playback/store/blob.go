package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sshward/sshward/recorder"
)

// blob is the in-memory state of one recording's cast file. Live ones stay
// in Store.blobs (size and running digest; the file is opened per chunk, so
// thousands of live sessions hold no descriptors); finished ones are loaded
// on demand and not kept.
type blob struct {
	id string

	mu       sync.Mutex // guards the fields below; held across the I/O of one append
	loaded   bool
	exists   bool // a record exists
	owner    string
	finished bool
	gen      int
	size     int64     // committed bytes: fsynced and acknowledged
	hash     hash.Hash // sha256 of the committed bytes, while live
	changed  chan struct{}
	// The side blob (sideblob.go): committed size and, while live, digest.
	bsize int64
	bhash hash.Hash
	// The files on disk, while live (atrest.go).
	cf, bf appendFile
}

// notifyLocked wakes everyone waiting for the cast to change.
func (b *blob) notifyLocked() {
	if b.changed != nil {
		close(b.changed)
	}
	b.changed = make(chan struct{})
}

// lockBlob returns the recording's blob, loaded and locked.
func (s *Store) lockBlob(id string) (*blob, error) {
	if err := recorder.CheckSessionID(id); err != nil {
		return nil, fmt.Errorf("store: %w", ErrNotFound)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	b := s.blobs[id]
	if b == nil {
		b = &blob{id: id, changed: make(chan struct{})}
		s.blobs[id] = b
	}
	s.mu.Unlock()
	b.mu.Lock()
	if b.loaded {
		return b, nil
	}
	if err := s.load(b); err != nil {
		b.mu.Unlock()
		s.evict(b)
		return nil, err
	}
	b.loaded = true
	if b.finished || !b.exists {
		// Nothing to keep open: later calls read the record again.
		s.evict(b)
	}
	return b, nil
}

// evict forgets b if it is still the blob of its id.
func (s *Store) evict(b *blob) {
	s.mu.Lock()
	if s.blobs[b.id] == b {
		delete(s.blobs, b.id)
	}
	s.mu.Unlock()
}

// load reads the record and, for a live recording, opens its cast. After a
// crash the cast may hold the start of a chunk that was never acknowledged:
// it is cut back to its last '\n' (chunks are whole lines) and the host
// resends from there.
func (s *Store) load(b *blob) error {
	rec, err := s.getRecord(b.id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	b.exists, b.owner, b.finished, b.gen = true, rec.Owner, rec.Finished, rec.Generation
	if rec.Finished {
		b.size = rec.Stored
		if rec.Meta.Blob != nil {
			b.bsize = rec.Meta.Blob.Bytes
		}
		return nil
	}
	f, err := os.OpenFile(s.castPath(b.id), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("store: open cast %s: %w", b.id, err)
	}
	size, h, cf, err := s.recoverFile(f, true)
	if err == nil && !s.cfg.InsecureSkipSync {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("store: recover cast %s: %w", b.id, err)
	}
	b.size, b.hash, b.cf = size, h, cf
	if err := f.Close(); err != nil {
		return err
	}
	return s.loadSideBlob(b)
}

// recoverCast cuts f after its last '\n' and hashes what stays.
func recoverCast(f *os.File) (int64, hash.Hash, error) {
	h := sha256.New()
	var size, keep int64
	buf := make([]byte, 256<<10)
	for {
		n, err := f.ReadAt(buf, size)
		if n > 0 {
			if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
				keep = size + int64(i) + 1
			}
			size += int64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, nil, err
		}
	}
	if keep != size {
		if err := f.Truncate(keep); err != nil {
			return 0, nil, err
		}
	}
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, keep)); err != nil {
		return 0, nil, err
	}
	return keep, h, nil
}

// StartRequest starts (or resumes) a recording.
type StartRequest struct {
	ID        string
	Owner     string   // the host: its certificate's first name
	HostNames []string // all names of its certificate
	HostKeyID string
	Meta      recorder.Metadata
}

// Start registers a recording and returns how many of its bytes are stored:
// 0 for a new one, the stored size when the same host starts it again. A
// session id another host started gives ErrOwner.
func (s *Store) Start(ctx context.Context, req StartRequest) (int64, error) {
	b, err := s.lockBlob(req.ID)
	if err != nil {
		return 0, err
	}
	defer b.mu.Unlock()
	if b.exists {
		if b.owner != req.Owner {
			return 0, fmt.Errorf("store: start %s: %w", req.ID, ErrOwner)
		}
		return b.size, nil
	}
	now := s.cfg.Now().UTC()
	meta := req.Meta
	meta.SessionID = req.ID
	start := meta.Start
	if start.IsZero() {
		start = now
	}
	rec := &Record{
		ID: req.ID, Owner: req.Owner, HostNames: req.HostNames, HostKeyID: req.HostKeyID,
		Meta: meta, Start: start.UTC(), Received: now,
	}
	// A cast without a record is what a crash between the two left: it was
	// never acknowledged, so it starts empty.
	f, err := os.OpenFile(s.castPath(req.ID), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("store: start %s: %w", req.ID, err)
	}
	fail := func(err error) (int64, error) {
		f.Close() // may be closed already
		os.Remove(s.castPath(req.ID))
		return 0, fmt.Errorf("store: start %s: %w", req.ID, err)
	}
	if err := s.resetSideBlobLocked(b); err != nil { // one a crash left
		return fail(err)
	}
	// The directory entry must be durable before any chunk is
	// acknowledged. The metadata file is written at finish; until then the
	// record holds the metadata.
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := s.syncDir(); err != nil {
		return fail(err)
	}
	if err := s.update(func(tx *bolt.Tx) error { return putRecord(tx, rec) }); err != nil {
		return fail(err)
	}
	b.exists, b.owner, b.finished, b.size, b.hash = true, req.Owner, false, 0, sha256.New()
	b.cf = s.newAppendFile()
	s.mu.Lock()
	if s.blobs[req.ID] == nil && !s.closed {
		s.blobs[req.ID] = b
	}
	s.mu.Unlock()
	b.notifyLocked()
	return 0, nil
}

// Append writes a chunk at offset and returns the stored size once the
// chunk is on disk (fsynced). offset must be the stored size, else an
// *OffsetError says where to resume; a finished recording answers with an
// *OffsetError too (its final size), so that the host goes on to finish.
func (s *Store) Append(ctx context.Context, id, owner string, offset int64, data []byte) (int64, error) {
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return 0, ErrChunk
	}
	b, err := s.lockBlob(id)
	if err != nil {
		return 0, err
	}
	defer b.mu.Unlock()
	switch {
	case !b.exists:
		return 0, fmt.Errorf("store: append to %s: %w", id, ErrNotFound)
	case b.owner != owner:
		return 0, fmt.Errorf("store: append to %s: %w", id, ErrOwner)
	case b.finished || offset != b.size:
		return 0, &OffsetError{Stored: b.size}
	}
	f, err := os.OpenFile(s.castPath(id), os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("store: append to %s: %w", id, err)
	}
	// Nothing of a failed chunk stays: the next one starts at size.
	cf, err := s.writeChunk(f, b.cf, data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("store: append to %s: %w", id, err)
	}
	b.cf = cf
	b.hash.Write(data)
	b.size += int64(len(data))
	b.notifyLocked()
	s.idx.poke(id)
	return b.size, nil
}

// FinishRequest finishes a recording.
type FinishRequest struct {
	ID        string
	Owner     string
	HostKeyID string
	// HostCert is the certificate (authorized_keys form) whose key made
	// Signature, kept so that replay can verify it again.
	HostCert  string
	Meta      recorder.Metadata // final: SHA256 and CastBytes of the whole cast
	Signature string
	// Verify checks the signature over Meta once the digest matched; its
	// error is returned as is and the bytes stay.
	Verify func(recorder.Metadata) error
	// ClientAddr is recorded in the audit event.
	ClientAddr string
}

// Finish closes a recording whose stored bytes match Meta's SHA256 and
// CastBytes and whose signature verifies. A mismatch discards the stored
// bytes (ErrDigest): the host ships the recording again from 0. Finishing
// again with the same digest returns the record; with another, ErrConflict.
// The finish is an event in the audit chain, in the same transaction, so
// the chain vouches for every recording the server accepted.
func (s *Store) Finish(ctx context.Context, req FinishRequest) (*Record, error) {
	b, err := s.lockBlob(req.ID)
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	switch {
	case !b.exists:
		return nil, fmt.Errorf("store: finish %s: %w", req.ID, ErrNotFound)
	case b.owner != req.Owner:
		return nil, fmt.Errorf("store: finish %s: %w", req.ID, ErrOwner)
	case b.finished:
		rec, err := s.getRecord(req.ID)
		if err != nil {
			return nil, err
		}
		if rec.Meta.SHA256 == req.Meta.SHA256 && rec.Stored == req.Meta.CastBytes {
			return rec, nil
		}
		return nil, fmt.Errorf("store: finish %s: %w", req.ID, ErrConflict)
	}
	if sum := hex.EncodeToString(b.hash.Sum(nil)); sum != req.Meta.SHA256 || b.size != req.Meta.CastBytes ||
		!sideBlobMatchesLocked(b, req.Meta) {
		if err := s.discardLocked(b); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("store: finish %s: %w (stored %d bytes, host sent %d)", req.ID, ErrDigest, b.size, req.Meta.CastBytes)
	}
	if req.Verify != nil {
		if err := req.Verify(req.Meta); err != nil {
			return nil, err
		}
	}
	meta := req.Meta
	meta.SessionID = req.ID
	if err := s.writeMeta(meta); err != nil {
		return nil, fmt.Errorf("store: finish %s: %w", req.ID, err)
	}
	now := s.cfg.Now().UTC()
	var rec *Record
	err = s.update(func(tx *bolt.Tx) error {
		r, err := getRecordTx(tx, req.ID)
		if err != nil {
			return err
		}
		r.Meta, r.Stored, r.Finished, r.FinishedAt = meta, b.size, true, now
		r.Signature, r.HostCert, r.HostKeyID = req.Signature, req.HostCert, req.HostKeyID
		if err := putRecord(tx, r); err != nil {
			return err
		}
		rec = r
		_, err = appendAuditTx(tx, AuditEvent{
			Time: now, Type: "recording.finish", Actor: "host:" + req.Owner, Subject: req.ID,
			ClientAddr: req.ClientAddr, Outcome: "ok",
			Details: map[string]string{"sha256": meta.SHA256, "cast_bytes": fmt.Sprint(meta.CastBytes),
				"tier": meta.Tier, "user": meta.Identity, "host_key_id": req.HostKeyID},
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: finish %s: %w", req.ID, err)
	}
	b.finished = true
	b.hash, b.bhash = nil, nil
	b.notifyLocked()
	s.evict(b)
	s.idx.poke(req.ID)
	return rec, nil
}

// discardLocked empties a live cast whose bytes did not match and bumps its
// generation, which tells the indexer and followers to start over.
func (s *Store) discardLocked(b *blob) error {
	f, err := os.OpenFile(s.castPath(b.id), os.O_WRONLY, 0)
	if err == nil {
		err = f.Truncate(0)
		if err == nil {
			err = s.sync(f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("store: discard %s: %w", b.id, err)
	}
	b.size, b.gen = 0, b.gen+1
	b.hash, b.cf = sha256.New(), s.newAppendFile()
	if err := s.resetSideBlobLocked(b); err != nil {
		return fmt.Errorf("store: discard %s: %w", b.id, err)
	}
	gen := b.gen
	err = s.update(func(tx *bolt.Tx) error {
		r, err := getRecordTx(tx, b.id)
		if err != nil {
			return err
		}
		r.Generation = gen
		return putRecord(tx, r)
	})
	b.notifyLocked()
	s.idx.poke(b.id)
	if err != nil {
		return fmt.Errorf("store: discard %s: %w", b.id, err)
	}
	return nil
}

// CastState is how much of a cast can be read.
type CastState struct {
	Size       int64 // committed bytes (whole lines)
	Finished   bool
	Generation int // changes when the stored bytes were discarded
}

// Cast returns the recording's cast state and a channel closed at its next
// change (nil once finished: it will not change).
func (s *Store) Cast(id string) (CastState, <-chan struct{}, error) {
	b, err := s.lockBlob(id)
	if err != nil {
		return CastState{}, nil, err
	}
	defer b.mu.Unlock()
	if !b.exists {
		return CastState{}, nil, fmt.Errorf("store: cast %s: %w", id, ErrNotFound)
	}
	st := CastState{Size: b.size, Finished: b.finished, Generation: b.gen}
	if b.finished {
		return st, nil, nil
	}
	return st, b.changed, nil
}

// OpenCast opens the cast file for reading. Read at most CastState.Size
// bytes: a live cast may hold the start of a chunk being written.
func (s *Store) OpenCast(id string) (File, error) {
	return s.openFile(id, "cast", s.castPath)
}

// Digest recomputes the sha256 (hex) and size of the stored cast, to check
// it against the signed metadata at replay.
func (s *Store) Digest(id string) (string, int64, error) {
	return digestFile("cast", id, s.OpenCast)
}

// openFile opens one of a recording's files (path gives its name) for
// reading; ErrNotFound for a malformed id or a missing file.
func (s *Store) openFile(id, what string, path func(string) string) (File, error) {
	if err := recorder.CheckSessionID(id); err != nil {
		return nil, ErrNotFound
	}
	f, err := os.Open(path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: open %s %s: %w", what, id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	pf, err := s.openPlain(f)
	if err != nil {
		return nil, fmt.Errorf("store: open %s %s: %w", what, id, err)
	}
	return pf, nil
}

// digestFile returns the sha256 (hex) and size of what open opens.
func digestFile(what, id string, open func(string) (File, error)) (string, int64, error) {
	f, err := open(id)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("store: digest %s %s: %w", what, id, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// writeMeta replaces blobs/<id>.json atomically.
func (s *Store) writeMeta(m recorder.Metadata) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	var rnd [8]byte
	if _, err := io.ReadFull(rand.Reader, rnd[:]); err != nil {
		return err
	}
	final := s.metaPath(m.SessionID)
	tmp := final + ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = s.sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return s.syncDir()
}

// endTime is when a recording ended, for retention.
func endTime(r *Record) time.Time {
	switch {
	case !r.Meta.End.IsZero():
		return r.Meta.End
	case !r.FinishedAt.IsZero():
		return r.FinishedAt
	}
	return r.Received
}
