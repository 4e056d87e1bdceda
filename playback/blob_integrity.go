package playback

import (
	"crypto/subtle"

	"github.com/sshward/sshward/playback/store"
)

// blobStamp is the file stamp of a recording's side blob (zero when it has
// none), part of the integrity cache key: an edit of the blob is found on
// the next list, as an edit of the cast is.
func (s *Server) blobStamp(id string) fileStamp {
	f, err := s.st.OpenBlob(id)
	if err != nil {
		return fileStamp{}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fileStamp{}
	}
	return stampOf(fi)
}

// blobMatches reports whether the stored side blob is the one the signed
// metadata describes (recorder.Metadata.Blob): same size, same sha256. A
// recording without one matches; a missing, truncated or edited blob does
// not, and the recording fails its integrity check like an edited cast.
func (s *Server) blobMatches(rec *store.Record) bool {
	want := rec.Meta.Blob
	if want == nil {
		return true
	}
	sum, size, err := s.st.BlobDigest(rec.ID)
	return err == nil && size == want.Bytes && subtle.ConstantTimeCompare([]byte(sum), []byte(want.SHA256)) == 1
}
