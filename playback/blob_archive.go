package playback

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// sideBlobsPrefix holds the side blobs (recorder blob.go) in the bucket,
// beside casts/ and records/.
const sideBlobsPrefix = "sideblobs/"

func sideBlobKey(id string) string { return sideBlobsPrefix + id + ".blob" }

// uploadBlob puts a finished recording's side blob, if it has one: before
// its record object, so that a record object means a whole recording.
func (a *archiver) uploadBlob(ctx context.Context, rec *store.Record) error {
	if rec.Meta.Blob == nil {
		return nil
	}
	f, err := a.st.OpenBlob(rec.ID)
	if err != nil {
		return err
	}
	defer f.Close()
	n := rec.Meta.Blob.Bytes
	return a.obj.Put(ctx, sideBlobKey(rec.ID), io.LimitReader(f, n), n)
}

// fetchBlob downloads an archived side blob into a temporary file and
// checks it against the signed digest, before anything is stored; nil when
// the recording has none. The caller closes and removes the file.
func fetchBlob(ctx context.Context, obj Objects, rec *store.Record) (*os.File, error) {
	want := rec.Meta.Blob
	if want == nil {
		return nil, nil
	}
	tmp, err := os.CreateTemp("", "sshward-reindex-blob-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	r, err := obj.Get(ctx, sideBlobKey(rec.ID), 0, -1)
	if err != nil {
		return fail(err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	r.Close()
	if err != nil {
		return fail(err)
	}
	if n != want.Bytes || hex.EncodeToString(h.Sum(nil)) != want.SHA256 {
		return fail(fmt.Errorf("%w: the blob object of %s does not match its signed digest", store.ErrDigest, rec.ID))
	}
	return tmp, nil
}

// importBlob stores a fetched side blob (between Start and Finish of
// importRecording).
func importBlob(ctx context.Context, st *store.Store, rec *store.Record, tmp *os.File) error {
	if tmp == nil {
		return nil
	}
	n := rec.Meta.Blob.Bytes
	buf := make([]byte, recorder.MaxChunkBytes)
	for off := int64(0); off < n; {
		k, err := tmp.ReadAt(buf[:min(int64(len(buf)), n-off)], off)
		if err != nil && k == 0 {
			return err
		}
		if off, err = st.AppendBlob(ctx, rec.ID, rec.Owner, off, buf[:k]); err != nil {
			return err
		}
	}
	return nil
}
