package playback

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback/objstore"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// Objects is the S3-compatible bucket finished recordings are archived to
// (objstore.Bucket): the source of truth that replicas share and rebuild
// from (Reindex).
type Objects interface {
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
	Size(ctx context.Context, key string) (int64, error)
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) iter.Seq2[objstore.Object, error]
}

// Object keys: the cast as shipped, and the server's record of it (the
// host's final metadata, its signature and certificate), written last, so
// that a record object means a whole recording.
const (
	castsPrefix   = "casts/"
	recordsPrefix = "records/"
)

func castKey(id string) string   { return castsPrefix + id + ".cast" }
func recordKey(id string) string { return recordsPrefix + id + ".json" }

// archiver uploads finished recordings to Objects, retrying until each is
// there: while the bucket is away nothing is lost, the local copy stays and
// is served. It runs inside Server.Serve.
type archiver struct {
	st    *store.Store
	obj   Objects
	log   *slog.Logger
	retry time.Duration

	wake chan struct{}

	mu       sync.Mutex // guards the fields below
	queue    []string   // finished, not yet archived
	queued   map[string]bool
	archived int
	lastErr  string
	lastAt   time.Time
}

// ArchiveStatus is what /healthz says of the archive.
type ArchiveStatus struct {
	Pending   int       `json:"pending"`  // finished recordings not yet in the bucket
	Archived  int       `json:"archived"` // uploaded by this process
	LastError string    `json:"last_error,omitempty"`
	LastErrAt time.Time `json:"last_error_at,omitzero"`
}

func newArchiver(st *store.Store, obj Objects, log *slog.Logger, retry time.Duration) *archiver {
	if retry <= 0 {
		retry = 10 * time.Second
	}
	return &archiver{st: st, obj: obj, log: log, retry: retry, wake: make(chan struct{}, 1), queued: map[string]bool{}}
}

// enqueue schedules id (finished) for upload.
func (a *archiver) enqueue(id string) {
	a.mu.Lock()
	if !a.queued[id] {
		a.queued[id] = true
		a.queue = append(a.queue, id)
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *archiver) status() ArchiveStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return ArchiveStatus{Pending: len(a.queue), Archived: a.archived, LastError: a.lastErr, LastErrAt: a.lastAt}
}

// run finds what a previous process left unarchived (finished recordings
// without a record object), then uploads the queue until ctx ends.
func (a *archiver) run(ctx context.Context, finished func(context.Context) ([]string, error)) {
	for ctx.Err() == nil {
		if err := a.resume(ctx, finished); err == nil {
			break
		} else if ctx.Err() == nil {
			a.failed(err)
			if !sleepCtx(ctx, a.retry) {
				return
			}
		}
	}
	for ctx.Err() == nil {
		a.mu.Lock()
		var id string
		if len(a.queue) > 0 {
			id = a.queue[0]
		}
		a.mu.Unlock()
		if id == "" {
			select {
			case <-ctx.Done():
				return
			case <-a.wake:
			}
			continue
		}
		if err := a.upload(ctx, id); err != nil {
			if ctx.Err() != nil {
				return
			}
			a.failed(fmt.Errorf("archive %s: %w", id, err))
			if !sleepCtx(ctx, a.retry) {
				return
			}
			continue
		}
		a.mu.Lock()
		a.queue = a.queue[1:]
		delete(a.queued, id)
		a.archived++
		a.lastErr = ""
		a.mu.Unlock()
	}
}

func (a *archiver) failed(err error) {
	a.mu.Lock()
	a.lastErr, a.lastAt = err.Error(), time.Now()
	a.mu.Unlock()
	a.log.Warn("playback: archiving to object storage failed; the local copy stays and the upload is retried", "err", err)
}

// resume queues every finished recording whose record object is missing.
func (a *archiver) resume(ctx context.Context, finished func(context.Context) ([]string, error)) error {
	have := map[string]bool{}
	for o, err := range a.obj.List(ctx, recordsPrefix) {
		if err != nil {
			return err
		}
		have[strings.TrimSuffix(strings.TrimPrefix(o.Key, recordsPrefix), ".json")] = true
	}
	ids, err := finished(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !have[id] {
			a.enqueue(id)
		}
	}
	return nil
}

// upload puts the cast, then the record: a record object always has its
// whole cast beside it.
func (a *archiver) upload(ctx context.Context, id string) error {
	rec, err := a.st.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted meanwhile (retention, purge)
	}
	if err != nil {
		return err
	}
	if !rec.Finished {
		return fmt.Errorf("recording %s is not finished", id)
	}
	f, err := a.st.OpenCast(id)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := a.obj.Put(ctx, castKey(id), io.LimitReader(f, rec.Stored), rec.Stored); err != nil {
		return err
	}
	if err := a.uploadBlob(ctx, rec); err != nil { // blob_archive.go
		return err
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := a.obj.Put(ctx, recordKey(id), bytes.NewReader(data), int64(len(data))); err != nil {
		return err
	}
	// replica.go: the upload's parts are not needed any more. Best effort:
	// the recording is archived whatever happens to them, and a leftover
	// part is never read again once the record exists.
	if err := dropUpload(ctx, a.obj, id); err != nil {
		a.log.WarnContext(ctx, "playback: cannot delete an archived upload's parts from the bucket", "session_id", id, "err", err)
	}
	return nil
}

// remove deletes a recording's objects (retention).
func (a *archiver) remove(ctx context.Context, id string) error {
	return DeleteArchived(ctx, a.obj, id)
}

// DeleteArchived deletes a recording's objects (retention, purge): the
// record first, so that a half-deleted recording is never taken for a
// whole one. Missing objects are no error.
func DeleteArchived(ctx context.Context, obj Objects, id string) error {
	if err := obj.Delete(ctx, recordKey(id)); err != nil {
		return err
	}
	if err := obj.Delete(ctx, sideBlobKey(id)); err != nil {
		return err
	}
	return obj.Delete(ctx, castKey(id))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ReindexResult counts what Reindex did.
type ReindexResult struct {
	Objects  int `json:"objects"`  // recordings in the bucket
	Imported int `json:"imported"` // added to the local store
	Present  int `json:"present"`  // already there
	Refused  int `json:"refused"`  // failed their digest or signature: not imported
}

// Reindex rebuilds a local store from the bucket: every archived recording
// the store lacks is imported through the ingest path (its digest checked
// against the stored bytes, its signature against the host certificate it
// carries), and the search index follows in the background. A replica's
// local files can therefore be thrown away and rebuilt.
func Reindex(ctx context.Context, st *store.Store, obj Objects, progress func(done, total int)) (ReindexResult, error) {
	var res ReindexResult
	var ids []string
	for o, err := range obj.List(ctx, recordsPrefix) {
		if err != nil {
			return res, err
		}
		ids = append(ids, strings.TrimSuffix(strings.TrimPrefix(o.Key, recordsPrefix), ".json"))
	}
	res.Objects = len(ids)
	for i, id := range ids {
		if progress != nil {
			progress(i, len(ids))
		}
		// A recording held here unfinished while the bucket has it
		// finished is the copy of an upload this replica was receiving
		// when it stopped (or lost to another replica): it is completed
		// from the bucket (importRecording appends what is missing).
		if local, err := st.Get(ctx, id); err == nil && (local.Finished || local.Deleting) {
			res.Present++
			continue
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return res, err
		}
		if err := importRecording(ctx, st, obj, id); err != nil {
			if errors.Is(err, recorder.ErrBadSignature) || errors.Is(err, store.ErrDigest) {
				res.Refused++
				continue
			}
			return res, fmt.Errorf("playback: reindex %s: %w", id, err)
		}
		res.Imported++
	}
	if progress != nil {
		progress(len(ids), len(ids))
	}
	return res, nil
}

func importRecording(ctx context.Context, st *store.Store, obj Objects, id string) error {
	rc, err := obj.Get(ctx, recordKey(id), 0, -1)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(rc, 4<<20))
	rc.Close()
	if err != nil {
		return err
	}
	var rec store.Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return fmt.Errorf("record object: %w", err)
	}
	if rec.ID != id || rec.Meta.SessionID != id || !rec.Finished {
		return fmt.Errorf("%w: the record object of %s names %q (finished %v)", recorder.ErrBadSignature, id, rec.ID, rec.Finished)
	}
	// Everything is checked before anything is stored: the signature over
	// the metadata by the host key it names, and the cast's digest.
	hostKey, err := parseHostCertKey(rec.HostCert)
	if err != nil {
		return fmt.Errorf("%w: %v", recorder.ErrBadSignature, err)
	}
	if err := recorder.VerifyRecording(hostKey, rec.Meta, rec.Signature); err != nil {
		return err
	}
	tmp, err := os.CreateTemp("", "sshward-reindex-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	cast, err := obj.Get(ctx, castKey(id), 0, -1)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), cast)
	cast.Close()
	if err != nil {
		return err
	}
	if n != rec.Meta.CastBytes || hex.EncodeToString(h.Sum(nil)) != rec.Meta.SHA256 {
		return fmt.Errorf("%w: the cast object of %s does not match its signed digest", store.ErrDigest, id)
	}

	blobTmp, err := fetchBlob(ctx, obj, &rec) // blob_archive.go
	if err != nil {
		return err
	}
	if blobTmp != nil {
		defer os.Remove(blobTmp.Name())
		defer blobTmp.Close()
	}
	start := rec.Meta
	start.Finished = false
	// off is what a partial local copy already holds (0 for a new one);
	// those bytes are the host's at the same offsets, and Finish checks the
	// whole cast against the signed digest.
	off, err := st.Start(ctx, store.StartRequest{ID: id, Owner: rec.Owner, HostNames: rec.HostNames, HostKeyID: rec.HostKeyID, Meta: start})
	if err != nil {
		return err
	}
	buf := make([]byte, recorder.MaxChunkBytes-recorder.MaxLineBytes-1)
	for {
		n, rerr := tmp.ReadAt(buf, off)
		chunk := buf[:n]
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 && rerr == nil {
			chunk = chunk[:i+1]
		}
		if len(chunk) > 0 {
			if off, err = st.Append(ctx, id, rec.Owner, off, chunk); err != nil {
				return err
			}
		}
		if rerr != nil {
			break
		}
	}
	if err := importBlob(ctx, st, &rec, blobTmp); err != nil {
		return err
	}
	_, err = st.Finish(ctx, store.FinishRequest{ID: id, Owner: rec.Owner, HostKeyID: rec.HostKeyID, HostCert: rec.HostCert,
		Meta: rec.Meta, Signature: rec.Signature, Verify: func(m recorder.Metadata) error {
			return recorder.VerifyRecording(hostKey, m, rec.Signature)
		}})
	return err
}

// finishedIDs lists every finished recording of the store, a page at a
// time.
func (s *Server) finishedIDs(ctx context.Context) ([]string, error) {
	var ids []string
	var cur *listCursor
	for {
		page, next, err := s.listPage(ctx, store.ListFilter{Limit: 1000}, cur)
		if err != nil {
			return nil, err
		}
		for _, r := range page {
			if r.Finished {
				ids = append(ids, r.ID)
			}
		}
		if next == "" {
			return ids, nil
		}
		if cur, err = parseListCursor(next); err != nil {
			return nil, err
		}
	}
}

// ArchiveStatus reports the archive's queue (zero without Config.Objects).
func (s *Server) ArchiveStatus() ArchiveStatus {
	if s.archive == nil {
		return ArchiveStatus{}
	}
	return s.archive.status()
}

// parseHostCertKey returns the key of a host certificate in
// authorized_keys form.
func parseHostCertKey(line string) (ssh.PublicKey, error) {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("host certificate: %w", err)
	}
	c, ok := k.(*ssh.Certificate)
	if !ok || c.CertType != ssh.HostCert {
		return nil, errors.New("host certificate: not a host certificate")
	}
	return c.Key, nil
}
