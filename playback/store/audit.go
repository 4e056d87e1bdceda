package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// AuditEvent is one record of the playback server's own audit log: who
// watched, exported or searched what, and which recordings were accepted or
// deleted. The log is append-only and hash-chained like the CA's: each
// event's Hash covers its content and the previous event's Hash, and the
// head (last Seq and Hash) is kept apart, so an edited, removed or
// truncated event is found by VerifyAudit.
type AuditEvent struct {
	Seq        uint64            `json:"seq"`
	Time       time.Time         `json:"time"`
	Type       string            `json:"type"` // "view", "export", "search", "login", "recording.finish", "retention.delete", …
	Actor      string            `json:"actor,omitempty"`
	Subject    string            `json:"subject,omitempty"` // usually a session id
	ClientAddr string            `json:"client_addr,omitempty"`
	Outcome    string            `json:"outcome"` // "ok" or "refused"
	Reason     string            `json:"reason,omitempty"`
	Details    map[string]string `json:"details,omitempty"`
	PrevHash   string            `json:"prev_hash"`
	Hash       string            `json:"hash"`
}

// auditDomain starts every hashed encoding.
const auditDomain = "sshward-playback-audit-v1\n"

var keyAuditHead = []byte("audit_head") // seq (8) ‖ hash

// auditHash is the hex sha256 of the domain and the event's JSON with Hash
// empty. encoding/json writes struct fields in order and map keys sorted,
// and the strings were made valid UTF-8 and the time UTC before hashing, so
// decoding and encoding a stored event gives the same bytes again.
func auditHash(ev AuditEvent) (string, error) {
	ev.Hash = ""
	raw, err := json.Marshal(ev)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append([]byte(auditDomain), raw...))
	return hex.EncodeToString(sum[:]), nil
}

func sanitize(ev *AuditEvent) {
	for _, p := range []*string{&ev.Type, &ev.Actor, &ev.Subject, &ev.ClientAddr, &ev.Outcome, &ev.Reason} {
		*p = strings.ToValidUTF8(*p, "\uFFFD")
	}
	if len(ev.Details) > 0 {
		clean := make(map[string]string, len(ev.Details))
		for k, v := range ev.Details {
			clean[strings.ToValidUTF8(k, "\uFFFD")] = strings.ToValidUTF8(v, "\uFFFD")
		}
		ev.Details = clean
	}
	ev.Time = ev.Time.UTC().Round(0)
}

func appendAuditTx(tx *bolt.Tx, ev AuditEvent) (AuditEvent, error) {
	if ev.Type == "" {
		return ev, errors.New("store: audit event without a type")
	}
	if ev.Outcome == "" {
		ev.Outcome = "ok"
	}
	sanitize(&ev)
	meta := tx.Bucket(bucketMeta)
	if head := meta.Get(keyAuditHead); len(head) >= 8 {
		ev.Seq = binary.BigEndian.Uint64(head[:8]) + 1
		ev.PrevHash = string(head[8:])
	} else {
		ev.Seq, ev.PrevHash = 1, ""
	}
	h, err := auditHash(ev)
	if err != nil {
		return ev, err
	}
	ev.Hash = h
	raw, err := json.Marshal(ev)
	if err != nil {
		return ev, err
	}
	key := binary.BigEndian.AppendUint64(nil, ev.Seq)
	if err := tx.Bucket(bucketAudit).Put(key, raw); err != nil {
		return ev, err
	}
	return ev, meta.Put(keyAuditHead, append(key, ev.Hash...))
}

// AppendAudit appends ev (Seq, PrevHash and Hash are set; Time defaults to
// now) and returns it as stored.
func (s *Store) AppendAudit(ctx context.Context, ev AuditEvent) (AuditEvent, error) {
	if ev.Time.IsZero() {
		ev.Time = s.cfg.Now()
	}
	var out AuditEvent
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		out, err = appendAuditTx(tx, ev)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("store: append audit %s: %w", ev.Type, err)
	}
	return out, nil
}

// AuditFilter selects audit events; zero fields select everything.
type AuditFilter struct {
	AfterSeq uint64
	Type     string
	Subject  string
	Limit    int // default 1000
}

// Audit returns events in order.
func (s *Store) Audit(ctx context.Context, f AuditFilter) ([]AuditEvent, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	out := []AuditEvent{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, f.AfterSeq+1)); k != nil && len(out) < f.Limit; k, v = c.Next() {
			var ev AuditEvent
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("audit event %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if (f.Type == "" || ev.Type == f.Type) && (f.Subject == "" || ev.Subject == f.Subject) {
				out = append(out, ev)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: audit: %w", err)
	}
	return out, nil
}

// ChainError says where the audit chain breaks.
type ChainError struct {
	Seq    uint64
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("store: audit chain broken at event %d: %s", e.Seq, e.Reason)
}

// AuditReport is the result of a successful VerifyAudit.
type AuditReport struct {
	Events uint64 `json:"events"`
	Head   string `json:"head"`
}

// VerifyAudit recomputes the chain and checks it ends at the head.
func (s *Store) VerifyAudit(ctx context.Context) (AuditReport, error) {
	var rep AuditReport
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		rep, err = verifyAuditTx(tx)
		return err
	})
	return rep, err
}

// verifyAuditTx is VerifyAudit in tx.
func verifyAuditTx(tx *bolt.Tx) (AuditReport, error) {
	var rep AuditReport
	err := func() error {
		prev := ""
		var want uint64 = 1
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			var ev AuditEvent
			if err := json.Unmarshal(v, &ev); err != nil {
				return &ChainError{Seq: seq, Reason: "undecodable"}
			}
			switch {
			case seq != want || ev.Seq != seq:
				return &ChainError{Seq: want, Reason: "missing or out of order"}
			case ev.PrevHash != prev:
				return &ChainError{Seq: seq, Reason: "does not follow the previous event"}
			}
			h, err := auditHash(ev)
			if err != nil || h != ev.Hash {
				return &ChainError{Seq: seq, Reason: "content does not match its hash"}
			}
			prev, want = ev.Hash, want+1
		}
		head := tx.Bucket(bucketMeta).Get(keyAuditHead)
		var headSeq uint64
		headHash := ""
		if len(head) >= 8 {
			headSeq, headHash = binary.BigEndian.Uint64(head[:8]), string(head[8:])
		}
		if headSeq != want-1 || headHash != prev {
			return &ChainError{Seq: headSeq, Reason: "the log ends before its recorded head (truncated)"}
		}
		rep = AuditReport{Events: want - 1, Head: prev}
		return nil
	}()
	return rep, err
}
