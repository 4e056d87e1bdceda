package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sshward/sshward/plugins/contract"
)

// Audit outcomes (AuditEvent.Outcome).
const (
	OutcomeOK      = contract.OutcomeOK
	OutcomeRefused = contract.OutcomeRefused
)

// AuditEvent is one record of the append-only, hash-chained audit log.
// Seq, PrevHash and Hash are set by AppendAudit. It is the plugin
// contract's type (notifiers receive it), which links no CA code.
type AuditEvent = contract.AuditEvent

// auditDomain starts every canonical encoding. A future encoding gets a new
// tag; records keep verifying under the tag they were written with.
const auditDomain = "sshward-audit-v1"

// AuditHash returns the hash AppendAudit stores in ev.Hash: the lowercase
// hex SHA-256 of the canonical encoding of ev, which covers every field but
// Hash, PrevHash first. The encoding is fixed forever (it is what makes old
// records verifiable) and independent of JSON:
//
//	str(s)  = uint32 big-endian byte length ‖ bytes of s
//	u64(n)  = uint64 big-endian
//	time(t) = str(t in UTC formatted as RFC 3339 with nanoseconds, trailing zeros trimmed)
//
//	str("sshward-audit-v1") ‖ str(PrevHash) ‖ u64(Seq) ‖ time(Time) ‖
//	str(Type) ‖ str(Actor) ‖ str(Subject) ‖ str(Tier) ‖ u64(Serial) ‖
//	str(KeyID) ‖ str(RequestID) ‖ str(ClientAddr) ‖ str(Outcome) ‖ str(Reason) ‖
//	uint32 number of Details ‖ for each key in byte order: str(key) ‖ str(value)
//
// Strings are taken as stored, i.e. after AppendAudit replaced invalid
// UTF-8 (which JSON could not round-trip) with U+FFFD.
func AuditHash(ev *AuditEvent) string {
	n := 128 + len(ev.PrevHash) + len(ev.Type) + len(ev.Actor) + len(ev.Subject) + len(ev.Tier) +
		len(ev.KeyID) + len(ev.RequestID) + len(ev.ClientAddr) + len(ev.Outcome) + len(ev.Reason)
	for k, v := range ev.Details {
		n += 8 + len(k) + len(v)
	}
	sum := sha256.Sum256(canonicalAudit(make([]byte, 0, n), ev))
	return hex.EncodeToString(sum[:])
}

func canonicalAudit(b []byte, ev *AuditEvent) []byte {
	str := func(b []byte, s string) []byte {
		return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
	}
	b = str(b, auditDomain)
	b = str(b, ev.PrevHash)
	b = binary.BigEndian.AppendUint64(b, ev.Seq)
	b = str(b, ev.Time.UTC().Format(time.RFC3339Nano))
	for _, s := range []string{ev.Type, ev.Actor, ev.Subject, ev.Tier} {
		b = str(b, s)
	}
	b = binary.BigEndian.AppendUint64(b, ev.Serial)
	for _, s := range []string{ev.KeyID, ev.RequestID, ev.ClientAddr, ev.Outcome, ev.Reason} {
		b = str(b, s)
	}
	keys := make([]string, 0, len(ev.Details))
	for k := range ev.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = str(str(b, k), ev.Details[k])
	}
	return b
}

// sanitizeAudit makes every string survive a JSON round trip unchanged, so
// the hash computed now matches the hash recomputed from the stored record.
// Audit events carry attacker-controlled text (user names of failed
// logins), and refusing to audit them is not an option.
func sanitizeAudit(ev *AuditEvent) {
	for _, p := range []*string{&ev.Type, &ev.Actor, &ev.Subject, &ev.Tier, &ev.KeyID,
		&ev.RequestID, &ev.ClientAddr, &ev.Outcome, &ev.Reason} {
		*p = strings.ToValidUTF8(*p, "\uFFFD")
	}
	dirty := false
	for k, v := range ev.Details {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			dirty = true
			break
		}
	}
	if !dirty {
		return
	}
	// Rebuild rather than edit the caller's map; keys that collide after
	// repair resolve in sorted order of the originals, so the result is
	// deterministic.
	keys := make([]string, 0, len(ev.Details))
	for k := range ev.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	clean := make(map[string]string, len(keys))
	for _, k := range keys {
		clean[strings.ToValidUTF8(k, "\uFFFD")] = strings.ToValidUTF8(ev.Details[k], "\uFFFD")
	}
	ev.Details = clean
}

// auditHead is the chain head kept in the internal bucket, updated with
// every append. It is what reveals a truncated tail.
type auditHead struct {
	seq  uint64
	hash string
}

func readHead(kv kvTx) (auditHead, bool, error) {
	in := kv.Bucket(bucketInternal)
	if in == nil {
		return auditHead{}, false, nil
	}
	v := in.Get(keyAuditHead)
	if v == nil {
		return auditHead{}, false, nil
	}
	if len(v) != 8+2*sha256.Size {
		return auditHead{}, true, fmt.Errorf("malformed audit head (%d bytes)", len(v))
	}
	return auditHead{seq: binary.BigEndian.Uint64(v), hash: string(v[8:])}, true, nil
}

// AppendAudit appends ev to the audit log: it sets ev.Time (when zero) and
// ev.Outcome (OutcomeOK when empty), assigns ev.Seq = head+1 and
// ev.PrevHash = head's hash as of this transaction, computes ev.Hash (see
// AuditHash) and moves the head. Strings with invalid UTF-8 are repaired
// first (U+FFFD). Put it in the same Update as the change it records, so
// that both land or neither does.
func (tx *Tx) AppendAudit(ev *AuditEvent) error {
	const op = "append audit"
	if ev.Type == "" {
		return fmt.Errorf("store: %s: Type is empty: %w", op, ErrInvalid)
	}
	if ev.Outcome == "" {
		ev.Outcome = OutcomeOK
	}
	if ev.Outcome != OutcomeOK && ev.Outcome != OutcomeRefused {
		return fmt.Errorf("store: %s: outcome %q is not %q or %q: %w", op, ev.Outcome, OutcomeOK, OutcomeRefused, ErrInvalid)
	}
	b, err := tx.writeBucket(op, bucketAudit)
	if err != nil {
		return err
	}
	in, err := tx.writeBucket(op, bucketInternal)
	if err != nil {
		return err
	}
	head, _, err := readHead(tx.kv)
	if err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	sanitizeAudit(ev)
	if ev.Time.IsZero() {
		ev.Time = tx.now()
	}
	// UTC: what the hash covers anyway, and JSON cannot carry zone offsets
	// with seconds in them.
	ev.Time = ev.Time.UTC()
	ev.Seq = head.seq + 1
	ev.PrevHash = head.hash
	ev.Hash = AuditHash(ev)
	raw, err := marshalRecord(ev)
	if err != nil {
		return fmt.Errorf("store: %s %s: %w", op, ev.Type, err)
	}
	// Keys only ever grow: fill pages completely instead of splitting them
	// half-empty (bbolt's default suits random inserts).
	b.AppendOnly()
	if err := b.Put(serialKey(ev.Seq), raw); err != nil {
		return fmt.Errorf("store: %s %s: %w", op, ev.Type, err)
	}
	hv := append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(ev.Hash)), ev.Seq), ev.Hash...)
	if err := in.Put(keyAuditHead, hv); err != nil {
		return fmt.Errorf("store: %s %s: head: %w", op, ev.Type, err)
	}
	return nil
}

// AuditFilter selects audit records for DB.Audit.
type AuditFilter struct {
	AfterSeq uint64 // only records with Seq > AfterSeq (for paging and following)
	Limit    int    // at most this many; <= 0 means no cap
	Type     string // only this event type; "" for all
}

// Audit returns audit records in Seq order: those the store holds, after
// its AuditCheckpoint (the ones before are in the archive, see PruneAudit).
func (db *DB) Audit(ctx context.Context, f AuditFilter) ([]AuditEvent, error) {
	var out []AuditEvent
	err := db.View(ctx, func(tx *Tx) error {
		b := tx.bucket(bucketAudit)
		if b == nil || f.AfterSeq == ^uint64(0) {
			return nil
		}
		cp, err := readCheckpoint(tx.kv)
		if err != nil {
			return fmt.Errorf("store: audit: %w", err)
		}
		c := b.Cursor()
		for k, raw := c.Seek(serialKey(max(f.AfterSeq, cp.Seq) + 1)); k != nil; k, raw = c.Next() {
			var ev AuditEvent
			if err := json.Unmarshal(raw, &ev); err != nil {
				return fmt.Errorf("store: audit: record %x: %w", k, err)
			}
			if f.Type != "" && ev.Type != f.Type {
				continue
			}
			out = append(out, ev)
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// AuditReport summarises an intact audit log.
type AuditReport struct {
	Records int    // number of records (= Seq of the last one)
	Head    string // Hash of the last record; "" for an empty log
	// Archived is the checkpoint: records 1 … Archived.Seq were archived
	// and pruned (PruneAudit), so only the chain after it was checked
	// here; the archive holds the rest (auditarchive.VerifyWithStore).
	Archived AuditCheckpoint
}

// AuditCheckpoint is where the audit log in the store begins once its
// start was archived: the last archived event and the seal of its segment
// (ca/auditarchive). The chain in the store goes on from Hash.
type AuditCheckpoint struct {
	Seq  uint64 `json:"seq"`            // last archived event (0: none)
	Hash string `json:"hash,omitempty"` // its Hash
	Seal string `json:"seal,omitempty"` // hash of the seal line of the segment that ends with it
	// Pruned is how far the records were deleted (Pruned < Seq while a
	// prune is under way or was cut short; the rest is deleted next time).
	Pruned uint64 `json:"pruned"`
}

func readCheckpoint(kv kvTx) (AuditCheckpoint, error) {
	var cp AuditCheckpoint
	in := kv.Bucket(bucketInternal)
	if in == nil {
		return cp, nil
	}
	v := in.Get(keyAuditCkpt)
	if v == nil {
		return cp, nil
	}
	if err := json.Unmarshal(v, &cp); err != nil || cp.Pruned > cp.Seq || cp.Seq > 0 && len(cp.Hash) != 2*sha256.Size {
		return AuditCheckpoint{}, fmt.Errorf("malformed audit checkpoint")
	}
	return cp, nil
}

// AuditCheckpoint returns where the store's audit log begins (zero when
// nothing was pruned).
func (db *DB) AuditCheckpoint(ctx context.Context) (AuditCheckpoint, error) {
	var cp AuditCheckpoint
	err := db.View(ctx, func(tx *Tx) error {
		var err error
		cp, err = readCheckpoint(tx.kv)
		return err
	})
	return cp, err
}

// pruneBatch is how many records one transaction deletes (etcd's default
// --max-txn-ops is 128).
const pruneBatch = 100

// PruneAudit drops archived records from the store. With cp.Seq above the
// current checkpoint it first moves the checkpoint to cp, which must
// continue it (first, the first seq of the archived segment, is the
// checkpoint's Seq + 1) and name a record of the log by its hash; then it
// deletes every record up to the checkpoint, pruneBatch per transaction,
// noting how far it got in each. Call it with a zero cp to finish a prune
// that was cut short. It returns how many records it deleted.
//
// Replicas may prune at once: every step reads the checkpoint and commits
// only if it did not change meanwhile (one transaction), so steps run one
// at a time, and a crash between two leaves a checkpoint that the log
// verifies from, with records not yet deleted before it (ignored by Audit
// and VerifyAudit, deleted by the next prune).
func (db *DB) PruneAudit(ctx context.Context, first uint64, cp AuditCheckpoint) (int, error) {
	const op = "prune audit"
	if cp.Seq > 0 {
		err := db.Update(ctx, func(tx *Tx) error {
			cur, err := readCheckpoint(tx.kv)
			if err != nil {
				return err
			}
			if cp.Seq <= cur.Seq {
				return nil // done already (another replica)
			}
			if first != cur.Seq+1 {
				return fmt.Errorf("segment starts at %d, the checkpoint is at %d: %w", first, cur.Seq, ErrInvalid)
			}
			b, err := tx.writeBucket(op, bucketAudit)
			if err != nil {
				return err
			}
			var ev AuditEvent
			if found, err := getJSON(b, serialKey(cp.Seq), &ev); err != nil || !found || ev.Hash != cp.Hash {
				return fmt.Errorf("the log's record %d does not have the archived hash: %w", cp.Seq, ErrInvalid)
			}
			in, err := tx.writeBucket(op, bucketInternal)
			if err != nil {
				return err
			}
			next := AuditCheckpoint{Seq: cp.Seq, Hash: cp.Hash, Seal: cp.Seal, Pruned: cur.Pruned}
			return putJSON(in, keyAuditCkpt, &next)
		})
		if err != nil {
			return 0, fmt.Errorf("store: %s to %d: %w", op, cp.Seq, err)
		}
	}
	deleted := 0
	for {
		n := 0
		err := db.Update(ctx, func(tx *Tx) error {
			n = 0
			cur, err := readCheckpoint(tx.kv)
			if err != nil || cur.Pruned >= cur.Seq {
				return err
			}
			b, err := tx.writeBucket(op, bucketAudit)
			if err != nil {
				return err
			}
			in, err := tx.writeBucket(op, bucketInternal)
			if err != nil {
				return err
			}
			to := min(cur.Seq, cur.Pruned+pruneBatch)
			for seq := cur.Pruned + 1; seq <= to; seq++ {
				if err := b.Delete(serialKey(seq)); err != nil {
					return err
				}
			}
			n = int(to - cur.Pruned)
			cur.Pruned = to
			return putJSON(in, keyAuditCkpt, &cur)
		})
		if err != nil {
			return deleted, fmt.Errorf("store: %s: %w", op, err)
		}
		if n == 0 {
			return deleted, nil
		}
		deleted += n
	}
}

// VerifyAudit walks the whole audit log in one read transaction and checks
// that Seq runs 1, 2, … without gaps, each record's PrevHash is the Hash of
// the one before, each Hash matches the record's content, and the head
// kept beside the log names the last record. The first violation is
// returned as a *ChainError.
//
// What it cannot see: someone able to write the file can rewrite the
// whole chain from the edit onward, head included. Compare Head with a
// copy kept elsewhere (notifier plugins receive every event's hash) to
// rule that out.
func (db *DB) VerifyAudit(ctx context.Context) (AuditReport, error) {
	var rep AuditReport
	err := db.View(ctx, func(tx *Tx) error {
		var err error
		rep, err = verifyChain(ctx, tx.kv)
		return err
	})
	return rep, err
}

// VerifyFile opens the store at path read-only and runs VerifyAudit, for
// `sshward-ca audit verify` on a copy (a live store is locked by its
// server; see DB.Snapshot).
func VerifyFile(ctx context.Context, path string) (AuditReport, error) {
	db, err := Open(ctx, Options{Path: path, ReadOnly: true})
	if err != nil {
		return AuditReport{}, err
	}
	rep, err := db.VerifyAudit(ctx)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return rep, err
}

func verifyChain(ctx context.Context, kv kvTx) (AuditReport, error) {
	cp, err := readCheckpoint(kv)
	if err != nil {
		return AuditReport{}, &ChainError{Seq: 1, Reason: err.Error()}
	}
	var (
		want = cp.Seq + 1 // the chain in the store goes on from the checkpoint
		prev = cp.Hash
		ev   AuditEvent
	)
	if b := kv.Bucket(bucketAudit); b != nil {
		c := b.Cursor()
		for k, raw := c.Seek(serialKey(want)); k != nil; k, raw = c.Next() {
			if want%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return AuditReport{}, fmt.Errorf("store: verify audit: %w", err)
				}
			}
			if len(k) != 8 {
				return AuditReport{}, &ChainError{Seq: want, Reason: "malformed record key"}
			}
			seq := binary.BigEndian.Uint64(k)
			if seq != want {
				return AuditReport{}, &ChainError{Seq: want, Reason: fmt.Sprintf("record missing (next record is %d)", seq)}
			}
			ev = AuditEvent{}
			if err := json.Unmarshal(raw, &ev); err != nil {
				return AuditReport{}, &ChainError{Seq: seq, Reason: "record does not decode"}
			}
			switch {
			case ev.Seq != seq:
				return AuditReport{}, &ChainError{Seq: seq, Reason: fmt.Sprintf("record claims seq %d", ev.Seq)}
			case ev.PrevHash != prev:
				return AuditReport{}, &ChainError{Seq: seq, Reason: "previous hash does not match the record before (record deleted or replaced)"}
			case AuditHash(&ev) != ev.Hash:
				return AuditReport{}, &ChainError{Seq: seq, Reason: "hash does not match content (record edited)"}
			}
			prev = ev.Hash
			want++
		}
	}
	last := want - 1
	head, found, err := readHead(kv)
	switch {
	case cp.Seq > 0 && head.seq < cp.Seq:
		return AuditReport{}, &ChainError{Seq: head.seq + 1, Reason: fmt.Sprintf("the archive checkpoint names seq %d beyond the head %d", cp.Seq, head.seq)}
	case err != nil:
		return AuditReport{}, &ChainError{Seq: last + 1, Reason: err.Error()}
	case !found && last == 0:
		return AuditReport{}, nil
	case !found:
		return AuditReport{}, &ChainError{Seq: last, Reason: "audit head missing"}
	case head.seq > last:
		return AuditReport{}, &ChainError{Seq: last + 1, Reason: fmt.Sprintf("head names seq %d but the log ends at %d (tail truncated)", head.seq, last)}
	case head.seq < last:
		return AuditReport{}, &ChainError{Seq: head.seq + 1, Reason: fmt.Sprintf("records after the head (seq %d) were not appended by the store", head.seq)}
	case head.hash != prev:
		return AuditReport{}, &ChainError{Seq: last, Reason: "head hash does not match the last record (record replaced)"}
	}
	return AuditReport{Records: int(last), Head: prev, Archived: cp}, nil
}

// AuditHeadSeq returns the sequence number of the last audit record (0 for
// an empty log) without reading the log.
func (db *DB) AuditHeadSeq(ctx context.Context) (uint64, error) {
	var seq uint64
	err := db.View(ctx, func(tx *Tx) error {
		h, _, err := readHead(tx.kv)
		seq = h.seq
		return err
	})
	return seq, err
}
