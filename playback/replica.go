package playback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sshward/sshward/playback/store"
)

// Playback replicas on one bucket. With Config.Objects set, the bucket is
// the source of truth and any number of playback servers may share it:
//
//   - Uploads in progress are shared. A chunk is put to the bucket as
//     uploads/ID/OFFSET.part before it is appended locally and acknowledged,
//     and the start as uploads/ID/start.json. Whatever a host was told is
//     stored is therefore in the bucket, whichever replica told it.
//   - A replica that did not see the beginning of an upload (the one that
//     did died, or the host failed over) first pulls the parts from the
//     bucket, in offset order, contiguous from what it holds: its answer to
//     the host's start (the stored size the host resumes from) comes from
//     the bucket, so the host sends neither a gap nor a byte twice. A part
//     the dead replica put but never acknowledged is kept (the host's bytes
//     at that offset are the same) and the host is told it is stored.
//   - The bucket being down does not stop ingest: the replica stores and
//     acknowledges locally (as without replicas) and logs it; the parts in
//     the bucket then end at a gap, and a replica taking over pulls only
//     the contiguous prefix, so the host sends the rest again: still no
//     gap and no duplicate, only more bytes sent.
//   - Finished recordings reach other replicas by a bounded periodic sync
//     (Config.ReplicaSync, default 2 s): the records/ listing is compared
//     with the local store and what is missing is imported like Reindex
//     does (digest and signature checked again), so search and playback on
//     any replica find a recording ingested through another within a few
//     seconds. The upload parts are deleted once the record is archived.
//
// A live (unfinished) recording is listed, followed and terminated on any
// replica (live_replicas.go: announced in the bucket, the follow forwarded
// to the replica receiving it). What stays per replica: a live recording's
// text is searched only on the replica receiving it; side blobs in
// progress are not shared (a host that fails over sends its blob again from the start, which
// the receiving replica takes from offset 0).

const uploadsPrefix = "uploads/"

func uploadStartKey(id string) string { return uploadsPrefix + id + "/start.json" }
func uploadPartKey(id string, off int64) string {
	return fmt.Sprintf("%s%s/%020d.part", uploadsPrefix, id, off)
}

// defaultReplicaSync is how often finished recordings of other replicas are
// looked for in the bucket.
const defaultReplicaSync = 2 * time.Second

// bucketPause is how long upload sharing is skipped after the bucket failed.
const bucketPause = 5 * time.Second

// sharing reports whether upload state goes to the bucket now.
func (s *Server) sharing() bool {
	return s.cfg.Objects != nil && s.cfg.Now().UnixNano() >= s.replica.pausedUntil.Load()
}

// ReplicaStatus counts what this replica took from the bucket.
type ReplicaStatus struct {
	Resumed      int   `json:"resumed"`       // uploads continued from parts another replica stored
	ResumedBytes int64 `json:"resumed_bytes"` // bytes pulled from those parts
	Synced       int   `json:"synced"`        // finished recordings imported from the bucket
	SyncErrors   int   `json:"sync_errors"`
	Unshared     int   `json:"unshared"` // upload steps the bucket could not take (ingest went on locally)
}

type replicaStats struct {
	resumed, synced, syncErrors atomic.Int64
	resumedBytes, unshared      atomic.Int64
	// pausedUntil (unix ns): after a bucket failure, upload sharing is
	// skipped for bucketPause so a down bucket does not slow every chunk.
	pausedUntil atomic.Int64
}

// ReplicaStatus reports what this replica took from the bucket.
func (s *Server) ReplicaStatus() ReplicaStatus {
	return ReplicaStatus{Resumed: int(s.replica.resumed.Load()), ResumedBytes: s.replica.resumedBytes.Load(),
		Synced: int(s.replica.synced.Load()), SyncErrors: int(s.replica.syncErrors.Load()),
		Unshared: int(s.replica.unshared.Load())}
}

// shareStart records a started upload in the bucket (idempotent).
func (s *Server) shareStart(ctx context.Context, req store.StartRequest) error {
	if !s.sharing() {
		return nil
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := s.cfg.Objects.Put(ctx, uploadStartKey(req.ID), bytes.NewReader(data), int64(len(data))); err != nil {
		return s.unshared(ctx, req.ID, fmt.Errorf("playback: share the start of %s: %w", req.ID, err))
	}
	return nil
}

// shareChunk puts a chunk at offset to the bucket before it is appended
// locally, when it is the next one this replica expects; it pulls from the
// bucket first when this replica is behind it. The local append then
// answers as before (stored size, or the offset mismatch).
func (s *Server) shareChunk(ctx context.Context, id string, offset int64, body []byte) error {
	if !s.sharing() || len(body) == 0 || body[len(body)-1] != '\n' {
		return nil
	}
	cs, _, err := s.st.Cast(id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !cs.Finished && cs.Size < offset) {
		_ = s.pullUpload(ctx, id) // logged there
		cs, _, err = s.st.Cast(id)
	}
	if err != nil || cs.Finished || cs.Size != offset {
		return nil // the append answers (not found, mismatch with the stored size)
	}
	if err := s.cfg.Objects.Put(ctx, uploadPartKey(id, offset), bytes.NewReader(body), int64(len(body))); err != nil {
		return s.unshared(ctx, id, fmt.Errorf("playback: share a chunk of %s: %w", id, err))
	}
	return nil
}

// pullUpload appends to the local store the parts of id's upload that
// other replicas stored in the bucket beyond what this one holds, starting
// it locally first when needed. It stops at the first gap.
func (s *Server) pullUpload(ctx context.Context, id string) error {
	if !s.sharing() {
		return nil
	}
	if err := s.pull(ctx, id); err != nil {
		return s.unshared(ctx, id, err)
	}
	return nil
}

// unshared logs an upload state the bucket could not take or give: ingest
// goes on locally.
func (s *Server) unshared(ctx context.Context, id string, err error) error {
	s.replica.unshared.Add(1)
	s.replica.pausedUntil.Store(s.cfg.Now().Add(bucketPause).UnixNano())
	s.log.WarnContext(ctx, "playback: the bucket is unreachable; the upload goes on on this replica only", "session_id", id, "err", err)
	return err
}

func (s *Server) pull(ctx context.Context, id string) error {
	type part struct {
		key string
		off int64
	}
	var parts []part
	for o, err := range s.cfg.Objects.List(ctx, uploadsPrefix+id+"/") {
		if err != nil {
			return fmt.Errorf("playback: list the upload of %s: %w", id, err)
		}
		name := strings.TrimPrefix(o.Key, uploadsPrefix+id+"/")
		if off, err := strconv.ParseInt(strings.TrimSuffix(name, ".part"), 10, 64); err == nil && strings.HasSuffix(name, ".part") {
			parts = append(parts, part{o.Key, off})
		}
	}
	if len(parts) == 0 {
		return nil
	}
	slices.SortFunc(parts, func(a, b part) int { return int(min(max(a.off-b.off, -1), 1)) })
	cs, _, err := s.st.Cast(id)
	var req store.StartRequest
	if errors.Is(err, store.ErrNotFound) {
		data, err := s.readObject(ctx, uploadStartKey(id), 1<<20)
		if err != nil {
			return fmt.Errorf("playback: read the start of %s: %w", id, err)
		}
		if err := json.Unmarshal(data, &req); err != nil || req.ID != id {
			return fmt.Errorf("playback: the start object of %s is not valid", id)
		}
		if _, err := s.st.Start(ctx, req); err != nil {
			return err
		}
		cs, _, err = s.st.Cast(id)
		if err != nil {
			return err
		}
	} else if err != nil {
		return err
	} else {
		rec, err := s.st.Get(ctx, id)
		if err != nil {
			return err
		}
		req.Owner = rec.Owner
	}
	if cs.Finished {
		return nil
	}
	stored, pulled := cs.Size, int64(0)
	for _, p := range parts {
		if p.off > stored {
			break // a gap: the host sends from stored
		}
		data, err := s.readObject(ctx, p.key, 64<<20)
		if err != nil {
			return fmt.Errorf("playback: read a part of %s: %w", id, err)
		}
		end := p.off + int64(len(data))
		if end <= stored {
			continue
		}
		// A part overlapping what is stored: its tail (stored is always at
		// a line boundary, so the tail is whole lines).
		n, err := s.st.Append(ctx, id, req.Owner, stored, data[stored-p.off:])
		if err != nil {
			return fmt.Errorf("playback: append a part of %s at %d: %w", id, stored, err)
		}
		pulled += n - stored
		stored = n
	}
	if pulled > 0 {
		s.replica.resumed.Add(1)
		s.replica.resumedBytes.Add(pulled)
		s.log.InfoContext(ctx, "playback: resumed an upload another replica began", "session_id", id, "bytes", pulled, "stored", stored)
	}
	return nil
}

// dropUpload deletes the parts of an upload once its recording is archived.
func dropUpload(ctx context.Context, obj Objects, id string) error {
	var keys []string
	for o, err := range obj.List(ctx, uploadsPrefix+id+"/") {
		if err != nil {
			return err
		}
		keys = append(keys, o.Key)
	}
	for _, k := range keys {
		if err := obj.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) readObject(ctx context.Context, key string, limit int64) ([]byte, error) {
	rc, err := s.cfg.Objects.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit))
}

// syncLoop imports, every Config.ReplicaSync, the finished recordings other
// replicas archived (Reindex: only what is missing).
func (s *Server) syncLoop(ctx context.Context) {
	every := s.cfg.ReplicaSync
	if every == 0 {
		every = defaultReplicaSync
	}
	if every < 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := Reindex(ctx, s.st, s.cfg.Objects, nil)
		if err != nil && ctx.Err() == nil {
			s.replica.syncErrors.Add(1)
			s.log.WarnContext(ctx, "playback: replica sync from the bucket failed; retrying", "err", err)
			continue
		}
		if res.Imported > 0 {
			s.replica.synced.Add(int64(res.Imported))
			s.log.InfoContext(ctx, "playback: imported recordings other replicas archived", "count", res.Imported)
		}
	}
}
