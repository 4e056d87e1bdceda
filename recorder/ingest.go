package recorder

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"golang.org/x/crypto/ssh"
)

// The ingest protocol between a host's Shipper and the playback server
// (every request signed with ca/hostauth by the host certificate):
//
//	POST /v1/ingest/{id}/start          Metadata        -> 200 IngestStored (bytes already stored; idempotent)
//	PUT  /v1/ingest/{id}/chunk?offset=N raw cast bytes  -> 200 IngestStored once fsynced
//	     header X-Sshward-Chunk-SHA256: hex sha256 of the body; whole lines only
//	     409 IngestStored when N is not the stored size (resume from it)
//	     422 when the body does not match its digest (send it again)
//	PUT  /v1/ingest/{id}/sealed?offset=N whole recorder/atrest frames of a sealed spool cast
//	     (sealed.go), N in plaintext bytes -> as chunk; 400 when a frame does not open
//	PUT  /v1/ingest/{id}/blob?offset=N  raw side blob bytes (blob.go) -> 200 IngestStored of the blob
//	     once fsynced; same digest header, 409 and 422 as chunk; any byte boundary
//	POST /v1/ingest/{id}/finish         IngestFinish    -> 200 when digest, size and signature verify
//	     422 when the stored bytes (cast or blob, against Metadata.SHA256 and
//	     Metadata.Blob) do not match: the server discarded both, start from 0
//
// Nothing leaves the spool until finish answered 200.
const (
	// IngestPathPrefix starts every ingest path.
	IngestPathPrefix = "/v1/ingest/"
	// ChunkDigestHeader carries the hex SHA-256 of a chunk's body, checked
	// apart from the hostauth signature so that a corrupted chunk is told
	// apart (422, send again) from a forged one (401).
	ChunkDigestHeader = "X-Sshward-Chunk-SHA256"
	// MaxChunkBytes is the largest chunk body the server accepts.
	MaxChunkBytes = 8 << 20
	// MaxIngestJSONBytes bounds the start and finish bodies.
	MaxIngestJSONBytes = 256 << 10
)

// Ingest actions (the last path element).
const (
	IngestStart  = "start"
	IngestChunk  = "chunk"
	IngestFinish = "finish"
	IngestBlob   = "blob" // a chunk of the side blob (blob.go)
	// IngestSealed is a chunk of a sealed cast (sealed.go): whole
	// recorder/atrest frames, which the server opens with its identities
	// and stores as a cast chunk at ?offset=N (plaintext bytes).
	IngestSealed = "sealed"
)

// IngestPath returns the path of an ingest action for a session.
func IngestPath(sessionID, action string) string {
	return IngestPathPrefix + url.PathEscape(sessionID) + "/" + action
}

// IngestStored is the answer to start and chunk: how many bytes of the cast
// the server holds durably.
type IngestStored struct {
	Stored int64 `json:"stored"`
	// BlobStored is, in the answer to start, how many bytes of the side
	// blob the server holds (servers older than side blobs omit it).
	BlobStored int64 `json:"blob_stored,omitempty"`
	// SpoolRecipients are, in the answer to start from a server that
	// encrypts recordings at rest, the age recipients (age1…) agents seal
	// their spool to (SpoolConfig.Recipients).
	SpoolRecipients []string `json:"spool_recipients,omitempty"`
}

// IngestFinishRequest closes a shipped recording. Metadata is the final
// metadata (SHA256 and CastBytes of the whole cast); Signature is
// SignRecording's output.
type IngestFinishRequest struct {
	Metadata  Metadata `json:"metadata"`
	Signature string   `json:"signature"`
}

// signedRecordingContext separates recording signatures from every other
// use of a host key (SSH handshakes, hostauth request signatures); v2 signs
// the whole metadata, v1 (legacyRecordingContext) only id, digest and size.
const (
	signedRecordingContext = "sshward-recording-v2"
	legacyRecordingContext = "sshward-recording-v1"
)

// RecordingSignedData is what a host signs to vouch for a recording: every
// field of its metadata (who, which certificate, which request, where,
// when, the digest and size of the cast), as
//
//	"sshward-recording-v2\n" + JSON of m
//
// The JSON is Go's encoding of Metadata, whose field order is fixed; the
// verifier encodes the stored metadata the same way, so an edit of any
// field (in transit or in the playback server's files) breaks the signature.
func RecordingSignedData(m Metadata) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("recorder: encode metadata %s: %w", m.SessionID, err)
	}
	return append([]byte(signedRecordingContext+"\n"), b...), nil
}

// legacyRecordingSignedData is the v1 signed data: id, digest and size only.
// A session id cannot hold a newline (CheckSessionID), so it is unambiguous.
func legacyRecordingSignedData(m Metadata) []byte {
	return []byte(legacyRecordingContext + "\n" + m.SessionID + "\n" + m.SHA256 + "\n" + strconv.FormatInt(m.CastBytes, 10))
}

// SignRecording signs m (RecordingSignedData) with the host key and returns
// the ssh.Signature in wire format, base64. RSA keys sign with rsa-sha2-512.
func SignRecording(signer ssh.Signer, rand io.Reader, m Metadata) (string, error) {
	data, err := RecordingSignedData(m)
	if err != nil {
		return "", err
	}
	var sig *ssh.Signature
	if as, ok := signer.(ssh.AlgorithmSigner); ok && signer.PublicKey().Type() == ssh.KeyAlgoRSA {
		sig, err = as.SignWithAlgorithm(rand, data, ssh.KeyAlgoRSASHA512)
	} else {
		sig, err = signer.Sign(rand, data)
	}
	if err != nil {
		return "", fmt.Errorf("recorder: sign recording %s: %w", m.SessionID, err)
	}
	return base64.StdEncoding.EncodeToString(ssh.Marshal(sig)), nil
}

// ErrBadSignature marks a recording signature that does not verify.
var ErrBadSignature = errors.New("recorder: recording signature does not verify")

// ErrLegacySignature marks a valid v1 signature: it vouches for the cast's
// bytes but not for the metadata beside them (who, where, which request).
var ErrLegacySignature = errors.New("recorder: recording signature covers only id, digest and size (v1)")

// VerifyRecording checks a SignRecording signature over all of m with pub
// (the host certificate's key). SHA-1 signatures ("ssh-rsa") are refused. A
// signature made by an older agent over id, digest and size only returns
// ErrLegacySignature: never treat it as proof of the metadata.
func VerifyRecording(pub ssh.PublicKey, m Metadata, signature string) error {
	raw, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return fmt.Errorf("%w: not base64", ErrBadSignature)
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(raw, &sig); err != nil {
		return fmt.Errorf("%w: not an SSH signature", ErrBadSignature)
	}
	if sig.Format == ssh.KeyAlgoRSA || sig.Format == "ssh-dss" {
		return fmt.Errorf("%w: %s (SHA-1) refused", ErrBadSignature, sig.Format)
	}
	data, err := RecordingSignedData(m)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if pub.Verify(data, &sig) == nil {
		return nil
	}
	if pub.Verify(legacyRecordingSignedData(m), &sig) == nil {
		return ErrLegacySignature
	}
	return ErrBadSignature
}

// ChunkDigest returns the hex SHA-256 sent in ChunkDigestHeader.
func ChunkDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
