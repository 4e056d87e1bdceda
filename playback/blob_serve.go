package playback

import (
	"net/http"
	"strconv"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
)

// CodeNoBlob is the error code of a blob request for a recording whose
// output was all text.
const CodeNoBlob = "no_blob"

// handleBlob serves a finished recording's side blob (recorder blob.go),
// GET /api/sessions/{id}/blob: the raw binary output the cast references.
// As the cast's export, it is refused when the recording fails its
// integrity check (which hashes the blob too) unless allow_tampered=1, and
// it is audited before the first byte.
func (s *Server) handleBlob(w http.ResponseWriter, r *http.Request, who *reader) {
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	if !rec.Finished {
		writeError(w, http.StatusConflict, api.CodeBadRequest, "session "+rec.ID+" is still live: its blob can be exported once it ended")
		return
	}
	if rec.Meta.Blob == nil {
		writeError(w, http.StatusNotFound, CodeNoBlob, "recording "+rec.ID+" has no blob: all of its output is text in the cast")
		return
	}
	integrity := s.verify(r.Context(), rec, true).integrity()
	w.Header().Set(HeaderIntegrity, integrity)
	if integrity == IntegrityFailed && !truthy(r.URL.Query().Get("allow_tampered")) {
		s.audit(r, store.AuditEvent{Type: "export", Actor: who.user, Subject: rec.ID, Outcome: "refused",
			Reason: "integrity check failed", Details: map[string]string{"part": "blob"}})
		writeError(w, http.StatusConflict, CodeIntegrityFailed,
			"recording "+rec.ID+" fails its integrity check (the stored bytes, its blob or the host signature do not verify); "+
				"it is evidence of tampering: export it with allow_tampered=1 (sshward export --allow-tampered) to examine it")
		return
	}
	f, err := s.st.OpenBlob(rec.ID)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.audit(r, store.AuditEvent{Type: "export", Actor: who.user, Subject: rec.ID, Details: map[string]string{
		"user": rec.Meta.Identity, "tier": rec.Meta.Tier, "part": "blob", "integrity": integrity,
		"blob_bytes": strconv.FormatInt(fi.Size(), 10)}})
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", `attachment; filename="`+rec.ID+`.blob"`)
	http.ServeContent(w, r, "", fi.ModTime(), f)
}
