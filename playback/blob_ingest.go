package playback

import (
	"net/http"

	"golang.org/x/crypto/ssh"
)

// handleBlobChunk stores a chunk of a recording's side blob (recorder
// blob.go): PUT /v1/ingest/{id}/blob?offset=N, the body's sha256 in
// recorder.ChunkDigestHeader. As a cast chunk, but at any byte boundary.
func (s *Server) handleBlobChunk(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	s.ingestChunk(w, r, cert, body, chunkKind{
		offsetMsg: "offset must be the byte offset of the chunk in the blob",
		chunkMsg:  "a blob chunk must not be empty",
		append:    s.st.AppendBlob,
	})
}
