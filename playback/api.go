package playback

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/atrest"
)

// Integrity of a recording (SessionSummary.Integrity).
const (
	IntegrityVerified = "verified" // digest and host signature checked
	IntegrityPending  = "pending"  // still live: checked when it finishes
	IntegrityFailed   = "failed"   // the stored bytes or signature no longer verify

	// HeaderIntegrity carries the integrity of a served cast.
	HeaderIntegrity = "X-Sshward-Integrity"
	// HeaderOffset is the byte offset a served cast starts at (?offset=).
	HeaderOffset = "X-Sshward-Offset"
	// CodeIntegrityFailed is the error code of an export refused because the
	// recording fails its integrity check.
	CodeIntegrityFailed = "integrity_failed"
	// CodeKeyMissing is the error code of a view or export of a recording
	// encrypted to a recipient whose identity the server does not hold.
	CodeKeyMissing = "key_missing"
	// CodeNotEncrypting is the error code of an encrypted export asked of a
	// server without recordings.encryption.
	CodeNotEncrypting = "not_encrypting"
)

// SessionSummary is one recording in GET /api/sessions.
type SessionSummary struct {
	ID         string     `json:"id"`
	User       string     `json:"user"`
	Principal  string     `json:"principal"`
	Host       string     `json:"host"`
	Tier       string     `json:"tier"`
	Kind       string     `json:"kind"`
	Command    string     `json:"command,omitempty"`
	Start      time.Time  `json:"start"`
	End        *time.Time `json:"end,omitempty"`
	Live       bool       `json:"live"`
	BreakGlass bool       `json:"break_glass"`
	RequestID  string     `json:"request_id,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	Approvers  []string   `json:"approvers,omitempty"`
	Bytes      int64      `json:"bytes"`
	Complete   bool       `json:"complete"`
	Integrity  string     `json:"integrity"`
	// UploadedBy is the host certificate name that uploaded the recording;
	// Provenance each check of who, where and which tier (finished ones).
	UploadedBy string            `json:"uploaded_by"`
	Provenance []ProvenanceCheck `json:"provenance,omitempty"`
	Hits       []HitRef          `json:"hits,omitempty"`
	// Flags are the suspicious-activity rules the session raised (issue 13).
	Flags []string `json:"flags,omitempty"`
}

// HitRef is a search hit inside a session.
type HitRef struct {
	Time float64 `json:"time"`
	Code string  `json:"code"`
	Text string  `json:"text"`
}

// SessionDetail answers GET /api/sessions/{id}.
type SessionDetail struct {
	SessionSummary
	Metadata      recorder.Metadata `json:"metadata"`
	HostCertKeyID string            `json:"host_cert_key_id"`
	SignatureOK   bool              `json:"signature_ok"`
	DigestOK      bool              `json:"digest_ok"`
	Markers       []store.Marker    `json:"markers"`
}

func (s *Server) summary(ctx context.Context, r *store.Record) SessionSummary {
	m := r.Meta
	sum := SessionSummary{
		ID: r.ID, User: m.Identity, Principal: m.Principal, Host: m.Host, Tier: m.Tier, Kind: m.Kind,
		Command: m.Command, Start: r.Start, Live: !r.Finished, BreakGlass: store.IsBreakGlass(r),
		RequestID: m.RequestID, Reason: m.Reason, Approvers: m.Approvers, Bytes: r.Stored,
		Complete: r.Finished && m.Complete, Integrity: IntegrityPending, UploadedBy: r.Owner, Flags: m.Flags,
	}
	if sum.Host == "" {
		sum.Host = r.Owner
	}
	if r.Finished {
		if !m.End.IsZero() {
			end := m.End
			sum.End = &end
		}
		c := s.verify(ctx, r, false)
		sum.Integrity, sum.Provenance = c.integrity(), c.provenance
	}
	return sum
}

// fileStamp identifies one state of a stored cast file. The change time
// (ctime) is in it because no user-level call can set it: an edit followed
// by `touch -r` restores the modification time, never the change time, and
// the inode number changes when the file is replaced.
type fileStamp struct {
	ino, size, mtime, ctime int64
}

func stampOf(fi os.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = int64(sys.Ino)
		st.ctime = sys.Ctim.Sec*1e9 + sys.Ctim.Nsec
	}
	return st
}

// integrityCheck is the result of hashing one state of a finished
// recording's cast against its signed digest and checking the host
// signature over its metadata.
type integrityCheck struct {
	stamp      fileStamp
	bstamp     fileStamp // of the side blob (blob_integrity.go)
	blobOK     bool      // the side blob matches Metadata.Blob (or there is none)
	sigOK      bool
	digOK      bool
	provenance []ProvenanceCheck
}

func (c integrityCheck) ok() bool {
	_, failed := failedProvenance(c.provenance)
	return c.sigOK && c.digOK && !failed
}

func (c integrityCheck) integrity() string {
	if c.ok() {
		return IntegrityVerified
	}
	return IntegrityFailed
}

// verify checks a finished recording: the stored bytes against the signed
// digest, and the host signature over the metadata. With full, the bytes
// are always hashed again (detail, replay and export: what is served is what
// was checked a moment ago). Otherwise (the list) the last result is reused
// while the file's stamp (inode, size, modification and change time) is the
// same; any write to the file changes its change time, so an edited byte is
// found on the next list too. A check that fails is audited once per state.
func (s *Server) verify(ctx context.Context, rec *store.Record, full bool) integrityCheck {
	var stamp fileStamp
	if f, err := s.st.OpenCast(rec.ID); err == nil {
		if fi, err := f.Stat(); err == nil {
			stamp = stampOf(fi)
		}
		f.Close()
	}
	bstamp := s.blobStamp(rec.ID)
	s.mu.Lock()
	c, cached := s.integrity[rec.ID]
	s.mu.Unlock()
	if cached && !full && c.stamp == stamp && c.bstamp == bstamp && stamp != (fileStamp{}) {
		return c
	}
	prev, hadPrev := c, cached
	c = integrityCheck{stamp: stamp, bstamp: bstamp}
	sum, size, err := s.st.Digest(rec.ID)
	c.blobOK = s.blobMatches(rec)
	c.digOK = err == nil && subtle.ConstantTimeCompare([]byte(sum), []byte(rec.Meta.SHA256)) == 1 &&
		size == rec.Meta.CastBytes && size == rec.Stored && c.blobOK
	if pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rec.HostCert)); err == nil {
		if cert, ok := pub.(*ssh.Certificate); ok {
			c.sigOK = recorder.VerifyRecording(cert.Key, rec.Meta, rec.Signature) == nil
			tr, err := s.trust(ctx)
			if err != nil {
				s.log.WarnContext(ctx, "playback: trust material unavailable for a provenance check", "err", err)
			}
			c.provenance = provenance(cert, rec.Meta, tr)
		}
	}
	s.mu.Lock()
	s.integrity[rec.ID] = c
	s.mu.Unlock()
	if !c.ok() && (!hadPrev || prev.ok() || prev.stamp != c.stamp || prev.bstamp != c.bstamp) {
		reason := "stored bytes do not match the signed digest"
		if !c.blobOK {
			reason = "stored side blob does not match the signed digest (tampered or truncated)"
		}
		if p, failed := failedProvenance(c.provenance); failed {
			reason = "provenance " + p.Name + ": " + p.Detail
		}
		if !c.sigOK {
			reason = "host signature does not verify over the metadata"
		}
		if _, err := s.st.AppendAudit(context.WithoutCancel(ctx), store.AuditEvent{Type: "recording.integrity_failed",
			Actor: "playback", Subject: rec.ID, Outcome: "failed", Reason: reason}); err != nil {
			s.log.ErrorContext(ctx, "playback: audit", "type", "recording.integrity_failed", "err", err)
		}
		s.log.WarnContext(ctx, "playback: recording fails its integrity check", "session_id", rec.ID, "reason", reason)
	}
	return c
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, who *reader) {
	q := r.URL.Query()
	f, err := listFilter(q, s.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	var hits map[string][]HitRef
	if text := q.Get("q"); text != "" {
		found, err := s.st.Search(r.Context(), store.Query{Text: text, Limit: 1000, PerSession: 5, Filter: f.Match})
		if errors.Is(err, store.ErrQuery) {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, "search needs a word of at least two letters or digits")
			return
		}
		if err != nil {
			s.internal(w, r, err)
			return
		}
		s.audit(r, store.AuditEvent{Type: "search", Actor: who.user, Details: map[string]string{"q": text, "hits": strconv.Itoa(len(found))}})
		hits = map[string][]HitRef{}
		f.IDs = map[string]bool{}
		for _, h := range found {
			f.IDs[h.SessionID] = true
			hits[h.SessionID] = append(hits[h.SessionID], HitRef{Time: h.Time, Code: h.Code, Text: h.Text})
		}
	}
	var liveFlags map[string][]string
	if f.Flagged {
		if liveFlags, err = s.flaggedLive(r.Context()); err != nil { // live_flags.go
			s.internal(w, r, err)
			return
		}
		f.FlaggedLive = map[string]bool{}
		for id := range liveFlags {
			f.FlaggedLive[id] = true
		}
	}
	cur, err := parseListCursor(q.Get("cursor"))
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	recs, next, err := s.listPage(r.Context(), f, cur) // listpage.go
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := make([]SessionSummary, 0, len(recs))
	for i := range recs {
		sum := s.summary(r.Context(), &recs[i])
		sum.Hits = hits[sum.ID]
		if sum.Live && len(sum.Flags) == 0 {
			sum.Flags = liveFlags[sum.ID]
		}
		out = append(out, sum)
	}
	res := map[string]any{"sessions": out}
	if next != "" {
		res["next_cursor"] = next
	}
	if truthy(q.Get("count")) {
		total := len(out)
		if next != "" || cur != nil {
			if total, err = s.countMatches(r.Context(), f); err != nil {
				s.internal(w, r, err)
				return
			}
		}
		res["total"] = total
	}
	writeJSON(w, http.StatusOK, s.withIndexStatus(q.Get("q") != "", res))
}

// listFilter reads the query of GET /api/sessions.
func listFilter(q url.Values, now time.Time) (store.ListFilter, error) {
	f := store.ListFilter{User: q.Get("user"), Host: q.Get("host"), Tier: q.Get("tier"),
		BreakGlass: truthy(q.Get("break_glass")), Live: truthy(q.Get("live")), Flagged: truthy(q.Get("flagged"))}
	var err error
	if f.Since, err = parseWhen(q.Get("since"), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = parseWhen(q.Get("until"), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	if f.Limit, err = parseLimit(q.Get("limit"), 100, 1000); err != nil {
		return f, err
	}
	return f, nil
}

func truthy(s string) bool { return s == "1" || s == "true" || s == "yes" }

// parseWhen reads an RFC 3339 time or a duration back from now ("24h",
// "7d").
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := ParseRetention(s)
	if err != nil || d == 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 24h or 7d", s)
	}
	return now.Add(-d), nil
}

func parseLimit(s string, def, maxN int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("limit %q must be a positive number", s)
	}
	return min(n, maxN), nil
}

// record returns the record of the {id} in the path, or answers 404.
func (s *Server) record(w http.ResponseWriter, r *http.Request) (*store.Record, bool) {
	id, ok := sessionID(w, r)
	if !ok {
		return nil, false
	}
	rec, err := s.st.Get(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, api.CodeNotFound, "no session "+id)
		return nil, false
	}
	if err != nil {
		s.internal(w, r, err)
		return nil, false
	}
	return rec, true
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request, who *reader) {
	if s.proxyLive(w, r) { // live_replicas.go
		return
	}
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	d := SessionDetail{Metadata: rec.Meta, HostCertKeyID: rec.HostKeyID}
	if rec.Finished {
		c := s.verify(r.Context(), rec, true)
		d.SignatureOK, d.DigestOK = c.sigOK, c.digOK
	}
	d.SessionSummary = s.summary(r.Context(), rec)
	markers, err := s.st.Markers(r.Context(), rec.ID)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	d.Markers = markers
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleSearch(w http.ResponseWriter, r *http.Request, who *reader) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), 100, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	hits, err := s.st.Search(r.Context(), store.Query{Text: q.Get("q"), Limit: limit})
	if errors.Is(err, store.ErrQuery) {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "search needs a word of at least two letters or digits (q=)")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.audit(r, store.AuditEvent{Type: "search", Actor: who.user, Details: map[string]string{"q": q.Get("q"), "hits": strconv.Itoa(len(hits))}})
	writeJSON(w, http.StatusOK, s.withIndexStatus(true, map[string]any{"hits": hits}))
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request, who *reader) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), 1000, 10000)
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	var after uint64
	if a := q.Get("after"); a != "" {
		if after, err = strconv.ParseUint(a, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, "after must be an event number")
			return
		}
	}
	evs, err := s.st.Audit(r.Context(), store.AuditFilter{AfterSeq: after, Limit: limit, Type: q.Get("type"), Subject: q.Get("subject")})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := map[string]any{"events": evs, "verified": true}
	if _, err := s.st.VerifyAudit(r.Context()); err != nil {
		out["verified"], out["verify_error"] = false, err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCast(w http.ResponseWriter, r *http.Request, who *reader) {
	if s.proxyLive(w, r) { // live_replicas.go
		return
	}
	s.serveCast(w, r, who, false)
}

func (s *Server) handleExport(w http.ResponseWriter, r *http.Request, who *reader) {
	s.serveCast(w, r, who, true)
}

// serveCast streams a cast. A finished one is served as a file (ranges,
// first bytes at once whatever its size); a live one is sent as far as it
// is stored and, with follow=1, then as it grows, until it finishes or the
// reader goes away. Every view and export is audited before the first byte.
func (s *Server) serveCast(w http.ResponseWriter, r *http.Request, who *reader, export bool) {
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	follow := !export && truthy(r.URL.Query().Get("follow"))
	// offset=N resumes a follow that lost its connection: the bytes from N
	// on, and HeaderOffset says the offset was honoured (older servers
	// send from the start; the reader then skips what it has).
	var from int64
	if o := r.URL.Query().Get("offset"); o != "" && !export {
		n, err := strconv.ParseInt(o, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, "offset must be a byte count (0 or more)")
			return
		}
		from = n
	}
	encrypted := export && truthy(r.URL.Query().Get("encrypted"))
	if encrypted && len(s.cfg.ExportRecipients) == 0 {
		writeError(w, http.StatusConflict, CodeNotEncrypting,
			"this playback server has no recordings.encryption recipients: an encrypted export is encrypted to them; export the plain cast instead")
		return
	}
	if err := s.st.Readable(rec.ID); errors.Is(err, atrest.ErrNoIdentity) {
		s.audit(r, store.AuditEvent{Type: map[bool]string{true: "export", false: "view"}[export], Actor: who.user, Subject: rec.ID, Outcome: "refused", Reason: "no identity decrypts it"})
		writeError(w, http.StatusServiceUnavailable, CodeKeyMissing,
			"recording "+rec.ID+" is encrypted to a recipient whose identity this server does not hold: add that identity to recordings.encryption (identity_file or identities) and restart; the recording is kept")
		return
	}
	integrity := IntegrityPending
	if rec.Finished {
		integrity = s.verify(r.Context(), rec, true).integrity()
	}
	// What fails its check is never served as if it were evidence: export
	// refuses unless the reader asks for the tampered bytes by name, and
	// every cast response carries the result in a header.
	w.Header().Set(HeaderIntegrity, integrity)
	if integrity == IntegrityFailed && export && !truthy(r.URL.Query().Get("allow_tampered")) {
		s.audit(r, store.AuditEvent{Type: "export", Actor: who.user, Subject: rec.ID, Outcome: "refused", Reason: "integrity check failed"})
		writeError(w, http.StatusConflict, CodeIntegrityFailed,
			"recording "+rec.ID+" fails its integrity check (the stored bytes or the host signature do not verify); "+
				"it is evidence of tampering: export it with allow_tampered=1 (sshward export --allow-tampered) to examine it")
		return
	}
	cs, changed, err := s.st.Cast(rec.ID)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	f, err := s.st.OpenCast(rec.ID)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	defer f.Close()
	typ := "view"
	if export {
		typ = "export"
	}
	s.audit(r, store.AuditEvent{Type: typ, Actor: who.user, Subject: rec.ID, Details: map[string]string{
		"user": rec.Meta.Identity, "tier": rec.Meta.Tier, "live": strconv.FormatBool(!cs.Finished), "follow": strconv.FormatBool(follow),
		"integrity": integrity, "offset": strconv.FormatInt(from, 10), "encrypted": strconv.FormatBool(encrypted)}})
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Cache-Control", "no-store")
	if export {
		w.Header().Set("Content-Disposition", `attachment; filename="`+rec.ID+`.cast"`)
	}
	if cs.Finished {
		from = min(from, cs.Size)
	}
	if encrypted {
		// The whole cast, age-encrypted to the configured recipients.
		w.Header().Set("Content-Type", "application/age")
		w.Header().Set("Content-Disposition", `attachment; filename="`+rec.ID+`.cast.age"`)
		w.Header().Set(HeaderOffset, "0")
		aw, err := age.Encrypt(w, s.cfg.ExportRecipients...)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		if _, err := io.Copy(aw, io.NewSectionReader(f, 0, cs.Size)); err != nil {
			s.log.WarnContext(r.Context(), "playback: encrypted export stopped", "session_id", rec.ID, "err", err)
			return
		}
		aw.Close()
		return
	}
	w.Header().Set(HeaderOffset, strconv.FormatInt(from, 10))
	if cs.Finished {
		fi, err := f.Stat()
		if err != nil {
			s.internal(w, r, err)
			return
		}
		http.ServeContent(w, r, "", fi.ModTime(), io.NewSectionReader(f, from, cs.Size-from))
		return
	}
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	pos := from
	gen := cs.Generation
	for {
		if cs.Size > pos {
			n, err := io.Copy(w, io.NewSectionReader(f, pos, cs.Size-pos))
			pos += n
			if err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
		if !follow || cs.Finished {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		}
		if cs, changed, err = s.st.Cast(rec.ID); err != nil || cs.Generation != gen || cs.Size < pos {
			return // the host is shipping it again: the reader starts over
		}
	}
}
