package playback

import (
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
)

// handleBlobChunk stores a chunk of a recording's side blob (recorder
// blob.go): PUT /v1/ingest/{id}/blob?offset=N, the body's sha256 in
// recorder.ChunkDigestHeader. As a cast chunk, but at any byte boundary.
func (s *Server) handleBlobChunk(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	offset, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil || offset < 0 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "offset must be the byte offset of the chunk in the blob")
		return
	}
	want := strings.ToLower(r.Header.Get(recorder.ChunkDigestHeader))
	if b, err := hex.DecodeString(want); err != nil || len(b) != 32 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, recorder.ChunkDigestHeader+" must be the hex SHA-256 of the body")
		return
	}
	if recorder.ChunkDigest(body) != want {
		writeError(w, http.StatusUnprocessableEntity, CodeDigest, "the chunk does not match its digest: send it again")
		return
	}
	stored, err := s.st.AppendBlob(r.Context(), id, owner(cert), offset, body)
	var oe *store.OffsetError
	switch {
	case errors.As(err, &oe):
		writeJSON(w, http.StatusConflict, recorder.IngestStored{Stored: oe.Stored})
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, api.CodeNotFound, "unknown session: start it first")
	case errors.Is(err, store.ErrOwner):
		writeError(w, http.StatusForbidden, CodeOwner, "session "+id+" belongs to another host")
	case errors.Is(err, store.ErrChunk):
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "a blob chunk must not be empty")
	case err != nil:
		s.internal(w, r, err)
	default:
		writeJSON(w, http.StatusOK, recorder.IngestStored{Stored: stored})
	}
}
