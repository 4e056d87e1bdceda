package playback

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/atrest"
)

// Error codes of the ingest API beyond ca/api's.
const (
	CodeDigest       = "digest_mismatch"
	CodeOffset       = "offset_mismatch"
	CodeOwner        = "session_owned_by_another_host"
	CodeBadSignature = "bad_signature"
	CodeSealed       = "sealed_chunk_refused"
)

type hostHandler func(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte)

// withHost admits a request signed with a valid, unexpired host certificate
// from the CA's host CA (ca/hostauth); anything else is 401.
func (s *Server) withHost(limit int64, h hostHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeError(w, http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body too large")
				return
			}
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, "could not read the request body")
			return
		}
		cert, err := s.hosts.Verify(r, body)
		if err != nil {
			s.log.WarnContext(r.Context(), "playback: host auth refused", "path", r.URL.Path, "client", clientIP(r), "reason", err.Error())
			writeError(w, http.StatusUnauthorized, api.CodeUnauthenticated, "host authentication failed: the host certificate is missing, expired or not from this CA")
			return
		}
		// Only now, with the certificate verified, is it looked up (and
		// named in the audit record).
		if s.cfg.RevokedHosts != nil && s.cfg.RevokedHosts.Revoked(cert) {
			s.audit(r, store.AuditEvent{Type: "host.refused", Actor: "host:" + owner(cert), Subject: r.URL.Path, Outcome: "refused",
				Reason: fmt.Sprintf("host certificate revoked (serial %d)", cert.Serial)})
			s.log.WarnContext(r.Context(), "playback: upload from a revoked host refused", "host", owner(cert), "serial", cert.Serial)
			writeError(w, http.StatusForbidden, api.CodeForbidden, "this host's certificate was revoked: join the host again with a new token")
			return
		}
		h(w, r, cert, body)
	}
}

// sessionID returns the {id} of the path, or answers 404.
func sessionID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if recorder.CheckSessionID(id) != nil {
		writeError(w, http.StatusNotFound, api.CodeNotFound, "no such session")
		return "", false
	}
	return id, true
}

func owner(cert *ssh.Certificate) string { return cert.ValidPrincipals[0] }

func (s *Server) handleStart(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	// Not strict: an agent newer than this server may send fields it does
	// not know yet, and the recording must not be refused for that.
	var m recorder.Metadata
	if err := json.Unmarshal(body, &m); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "the body must be the recording's metadata JSON")
		return
	}
	if m.SessionID == "" {
		m.SessionID = id
	}
	if m.SessionID != id {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "the metadata names another session than the path")
		return
	}
	if err := m.Check(); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "metadata: "+strings.TrimPrefix(err.Error(), "recorder: "))
		return
	}
	if s.refuseUnproven(w, r, cert, m, "start") {
		return
	}
	sreq := store.StartRequest{ID: id, Owner: owner(cert), HostNames: cert.ValidPrincipals, HostKeyID: cert.KeyId, Meta: m}
	// Replicas (replica.go): continue from what another replica stored.
	s.pullUpload(r.Context(), id)
	stored, err := s.st.Start(r.Context(), sreq)
	if err == nil {
		s.shareStart(r.Context(), sreq)
		s.hold(id) // live_replicas.go
	}
	switch {
	case errors.Is(err, store.ErrOwner):
		writeError(w, http.StatusConflict, CodeOwner, "session "+id+" belongs to another host")
	case err != nil:
		s.internal(w, r, err)
	default:
		out := recorder.IngestStored{Stored: stored, BlobStored: s.st.BlobStored(id)}
		if k := s.cfg.SpoolKeys; k != nil {
			out.SpoolRecipients = k.RecipientStrings
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func (s *Server) handleChunk(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	s.ingestChunk(w, r, cert, body, chunkKind{
		offsetMsg: "offset must be the byte offset of the chunk",
		chunkMsg:  "a chunk must be whole asciicast lines, ending with a newline",
		share:     true, // replica.go
		append:    s.st.Append,
	})
}

// handleSealedChunk stores a chunk of a sealed spool cast: whole
// recorder/atrest frames, opened with recordings.encryption's identities
// and stored as the cast chunk they hold (the store encrypts it again for
// its own disk when it encrypts at rest).
func (s *Server) handleSealedChunk(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	s.ingestChunk(w, r, cert, body, chunkKind{
		offsetMsg: "offset must be the plaintext byte offset of the first frame",
		chunkMsg:  "the frames must hold whole asciicast lines, ending with a newline",
		share:     true,
		append:    s.st.Append,
		open:      s.openSealed,
	})
}

// errSealed is a sealed chunk that does not open.
type errSealed struct{ msg string }

func (e errSealed) Error() string { return e.msg }

// openSealed returns the plaintext of a body of whole atrest frames.
func (s *Server) openSealed(body []byte) ([]byte, error) {
	k := s.cfg.SpoolKeys
	if k == nil || len(k.Identities) == 0 {
		return nil, errSealed{"this playback server has no recordings.encryption identity to open a sealed spool chunk"}
	}
	buf := append([]byte(atrest.Magic), body...)
	var idx atrest.Index
	if err := atrest.Scan(bytes.NewReader(buf), int64(len(buf)), &idx); err != nil || idx.End != int64(len(buf)) || len(idx.Frames) == 0 {
		return nil, errSealed{"a sealed chunk must be whole frames (recorder/atrest): this one is cut or corrupt"}
	}
	out := make([]byte, 0, idx.Size)
	for i, fr := range idx.Frames {
		p, err := atrest.Open(buf[fr.Disk:fr.Disk+int64(fr.Len)], fr.PLen, k.Identities)
		if errors.Is(err, atrest.ErrNoIdentity) {
			return nil, errSealed{fmt.Sprintf("frame %d of the sealed chunk was sealed to a recipient whose identity this server does not hold (recordings.encryption)", i)}
		}
		if err != nil {
			return nil, errSealed{fmt.Sprintf("frame %d of the sealed chunk does not decrypt: it was tampered with or damaged", i)}
		}
		out = append(out, p...)
	}
	return out, nil
}

// chunkKind is what differs between a cast chunk and a side-blob chunk
// (blob_ingest.go): the words of two refusals, whether other replicas
// follow it live, and where it is stored.
type chunkKind struct {
	offsetMsg, chunkMsg string
	share               bool
	append              func(ctx context.Context, id, owner string, offset int64, data []byte) (int64, error)
	// open, when set, turns the body into what is stored (sealed chunks).
	open func(body []byte) ([]byte, error)
}

// ingestChunk stores a chunk at ?offset=N whose body matches its sha256 in
// recorder.ChunkDigestHeader, answering what is stored (409 with the
// stored length when the offset is not where the stored bytes end).
func (s *Server) ingestChunk(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte, k chunkKind) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	offset, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil || offset < 0 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, k.offsetMsg)
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
	if k.open != nil {
		plain, err := k.open(body)
		if err != nil {
			s.audit(r, store.AuditEvent{Type: "recording.sealed_refused", Actor: "host:" + owner(cert), Subject: id, Outcome: "refused", Reason: err.Error()})
			s.log.WarnContext(r.Context(), "playback: sealed chunk refused", "session_id", id, "host", owner(cert), "reason", err.Error())
			writeError(w, http.StatusBadRequest, CodeSealed, err.Error())
			return
		}
		body = plain
	}
	if k.share {
		s.shareChunk(r.Context(), id, offset, body)
	}
	stored, err := k.append(r.Context(), id, owner(cert), offset, body)
	var oe *store.OffsetError
	switch {
	case errors.As(err, &oe):
		writeJSON(w, http.StatusConflict, recorder.IngestStored{Stored: oe.Stored})
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, api.CodeNotFound, "unknown session: start it first")
	case errors.Is(err, store.ErrOwner):
		writeError(w, http.StatusForbidden, CodeOwner, "session "+id+" belongs to another host")
	case errors.Is(err, store.ErrChunk):
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, k.chunkMsg)
	case err != nil:
		s.internal(w, r, err)
	default:
		if k.share {
			s.hold(id) // live_replicas.go
		}
		writeJSON(w, http.StatusOK, recorder.IngestStored{Stored: stored})
	}
}

func (s *Server) handleFinish(w http.ResponseWriter, r *http.Request, cert *ssh.Certificate, body []byte) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	var req recorder.IngestFinishRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "the body must be {metadata, signature}")
		return
	}
	if req.Metadata.SessionID != id || req.Signature == "" {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "the metadata must name the session and a signature is required")
		return
	}
	if s.refuseUnproven(w, r, cert, req.Metadata, "finish") {
		return
	}
	_, err := s.st.Finish(r.Context(), store.FinishRequest{
		ID: id, Owner: owner(cert), HostKeyID: cert.KeyId, Meta: req.Metadata, Signature: req.Signature,
		HostCert: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert))), ClientAddr: clientIP(r),
		Verify: func(m recorder.Metadata) error {
			// A v1 signature does not cover the metadata: refused like a bad one.
			if err := recorder.VerifyRecording(cert.Key, m, req.Signature); err != nil && !errors.Is(err, recorder.ErrBadSignature) {
				return fmt.Errorf("%w: %w", recorder.ErrBadSignature, err)
			} else if err != nil {
				return err
			}
			return nil
		},
	})
	switch {
	case errors.Is(err, store.ErrDigest):
		s.audit(r, store.AuditEvent{Type: "recording.discard", Actor: "host:" + owner(cert), Subject: id, Outcome: "refused",
			Reason: "stored bytes do not match the digest the host sent; the host sends the recording again"})
		writeError(w, http.StatusUnprocessableEntity, CodeDigest, "the stored bytes do not match the digest: they were discarded, ship the recording again from 0")
	case errors.Is(err, recorder.ErrBadSignature):
		s.audit(r, store.AuditEvent{Type: "recording.finish", Actor: "host:" + owner(cert), Subject: id, Outcome: "refused", Reason: "signature does not verify"})
		writeError(w, http.StatusBadRequest, CodeBadSignature, "the recording's signature does not verify with the host certificate's key")
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, api.CodeBadRequest, "session "+id+" was already finished with another digest")
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, api.CodeNotFound, "unknown session: start it first")
	case errors.Is(err, store.ErrOwner):
		writeError(w, http.StatusForbidden, CodeOwner, "session "+id+" belongs to another host")
	case err != nil:
		s.internal(w, r, err)
	default:
		if s.archive != nil {
			s.archive.enqueue(id)
		}
		s.release(r.Context(), id) // live_replicas.go
		writeJSON(w, http.StatusOK, map[string]string{"status": "stored"})
	}
}

// internal logs err and answers 500 without detail.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	s.log.ErrorContext(r.Context(), "playback: request failed", "path", r.URL.Path, "err", err)
	if errors.Is(err, syscall.ENOSPC) {
		// Nothing is lost: hosts keep recordings until they are stored,
		// and the index catches up by itself once there is room.
		writeError(w, http.StatusInsufficientStorage, api.CodeInternal, "the playback server's disk is full: free space on it; hosts send their recordings again by themselves")
		return
	}
	writeError(w, http.StatusInternalServerError, api.CodeInternal, "internal error: see the playback server's log")
}
