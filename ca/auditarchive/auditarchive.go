// Package auditarchive copies the CA's audit log to object storage in
// sealed, chained segments, and verifies the chain from the bucket alone.
//
// A segment holds the events Seq (k-1)*N+1 … k*N (N = Config.Segment,
// fixed for a bucket), so every replica of a CA cuts the same segments and
// writes the same bytes: two replicas archiving at once put identical
// objects. Only full segments are archived. The object is
// audit/FIRST-LAST.jsonl (20-digit zero-padded): one JSON event a line, as
// the store keeps it, then one seal line:
//
//	{"seal":{"first":F,"last":L,"head":"<Hash of event L>","prev_seal":"<seal hash of segment k-1>",
//	         "events_sha256":"<SHA-256 of the event lines>","segment":N}}
//
// A seal's hash is the SHA-256 of its line (without the newline); the next
// segment names it in prev_seal ("" for the first). Verify walks every
// segment in order and checks: the event hash chain (each event's Hash
// matches its content, its PrevHash is the previous event's Hash, across
// segments too), Seq without gaps, the seal's digest and head, and the seal
// chain. An edited, deleted, reordered or replaced segment is found.
//
// What it cannot see, as for the store's own chain: someone able to write
// the bucket can rewrite every segment from the edit onward, seals
// included. Keep the last seal hash elsewhere (the notifier plugins receive
// every event's hash; a bucket with object lock, WORM, rules the rewrite
// out).
package auditarchive

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/playback/objstore"
)

// Prefix is where segments go in the bucket.
const Prefix = "audit/"

// DefaultSegment is the number of events a segment holds.
const DefaultSegment = 1000

// Bucket is the object storage the archive uses (*objstore.Bucket).
type Bucket interface {
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
	List(ctx context.Context, prefix string) iter.Seq2[objstore.Object, error]
}

// Log is the audit log read for archiving (store.DB).
type Log interface {
	Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error)
	AuditHeadSeq(ctx context.Context) (uint64, error)
	AuditCheckpoint(ctx context.Context) (store.AuditCheckpoint, error)
}

// Pruner is a Log that drops archived events (store.DB).
type Pruner interface {
	Log
	PruneAudit(ctx context.Context, first uint64, cp store.AuditCheckpoint) (int, error)
}

// Seal closes a segment.
type Seal struct {
	First        uint64 `json:"first"`
	Last         uint64 `json:"last"`
	Head         string `json:"head"`
	PrevSeal     string `json:"prev_seal"`
	EventsSHA256 string `json:"events_sha256"`
	Segment      int    `json:"segment"`
}

type sealLine struct {
	Seal *Seal `json:"seal"`
}

// Key is the object key of the segment starting at first.
func Key(first, last uint64) string { return fmt.Sprintf("%s%020d-%020d.jsonl", Prefix, first, last) }

// Archive writes every full segment the bucket lacks and returns how many
// it wrote. segment is the number of events per segment (DefaultSegment
// when 0; it must stay the same for a bucket).
func Archive(ctx context.Context, log Log, b Bucket, segment int) (int, error) {
	if segment <= 0 {
		segment = DefaultSegment
	}
	head, err := log.AuditHeadSeq(ctx)
	if err != nil {
		return 0, fmt.Errorf("auditarchive: read the audit head: %w", err)
	}
	keys, err := segmentKeys(ctx, b)
	if err != nil {
		return 0, err
	}
	cp, err := log.AuditCheckpoint(ctx)
	if err != nil {
		return 0, fmt.Errorf("auditarchive: read the audit checkpoint: %w", err)
	}
	// A torn last segment (a write cut short, stored by a server that did
	// not check the body against its digest) whose events the store still
	// holds is written again, if what is there is the start of it.
	var torn []byte
	var next uint64 = 1
	prevSeal := ""
	for i := len(keys) - 1; i >= 0; i-- { // the last sealed segment
		data, err := readObject(ctx, b, keys[i].key)
		if err != nil {
			return 0, err
		}
		seal, line, err := decodeSeal(data)
		switch {
		case err != nil && i == len(keys)-1 && keys[i].first > cp.Seq:
			torn = data
			continue
		case err != nil:
			return 0, fmt.Errorf("auditarchive: %s: %w", keys[i].key, err)
		case seal.Segment != segment:
			return 0, fmt.Errorf("auditarchive: the bucket holds segments of %d events, not %d: keep the segment size of a bucket", seal.Segment, segment)
		}
		next, prevSeal = seal.Last+1, sealHash(line)
		break
	}
	if torn != nil && next != keys[len(keys)-1].first {
		return 0, fmt.Errorf("auditarchive: %s: not a sealed segment, and the segments before it do not end at %d (sshward-ca audit verify --from-s3)", keys[len(keys)-1].key, keys[len(keys)-1].first-1)
	}
	if next <= cp.Seq {
		return 0, fmt.Errorf("auditarchive: the store pruned the events up to %d but the bucket's archive ends at %d: segments are missing from the bucket (sshward-ca audit verify)", cp.Seq, next-1)
	}
	wrote := 0
	for next+uint64(segment)-1 <= head {
		evs, err := log.Audit(ctx, store.AuditFilter{AfterSeq: next - 1, Limit: segment})
		if err != nil {
			return wrote, fmt.Errorf("auditarchive: read events from %d: %w", next, err)
		}
		if len(evs) != segment || evs[0].Seq != next {
			return wrote, fmt.Errorf("auditarchive: the store gave %d events from %d, want %d", len(evs), next, segment)
		}
		data, line, err := encodeSegment(evs, prevSeal, segment)
		if err != nil {
			return wrote, err
		}
		last := evs[len(evs)-1].Seq
		if torn != nil {
			if !bytes.HasPrefix(data, torn) {
				return wrote, fmt.Errorf("auditarchive: %s is not a sealed segment and differs from the store's events: not rewritten (sshward-ca audit verify --from-s3)", Key(next, last))
			}
			torn = nil
		}
		if err := b.Put(ctx, Key(next, last), bytes.NewReader(data), int64(len(data))); err != nil {
			return wrote, fmt.Errorf("auditarchive: put segment %d-%d: %w", next, last, err)
		}
		wrote++
		next, prevSeal = last+1, sealHash(line)
	}
	return wrote, nil
}

// Prune drops from the store the events of every segment in the bucket
// that follows the store's checkpoint and ends at or before floor (the
// lowest event someone still has to read from the store, such as a
// notifier's cursor), in order. Each segment is confirmed first: read back
// from the bucket, it must be byte for byte the segment encoded from the
// store's own events, chained to the checkpoint's seal. A segment that
// differs stops the prune with an error and nothing of it is dropped. It
// also finishes a prune that was cut short, and returns how many segments
// it pruned.
func Prune(ctx context.Context, p Pruner, b Bucket, segment int, floor uint64) (int, error) {
	if segment <= 0 {
		segment = DefaultSegment
	}
	if _, err := p.PruneAudit(ctx, 0, store.AuditCheckpoint{}); err != nil {
		return 0, fmt.Errorf("auditarchive: finish the last prune: %w", err)
	}
	cp, err := p.AuditCheckpoint(ctx)
	if err != nil {
		return 0, fmt.Errorf("auditarchive: read the audit checkpoint: %w", err)
	}
	keys, err := segmentKeys(ctx, b)
	if err != nil {
		return 0, err
	}
	byFirst := make(map[uint64]segKey, len(keys))
	for _, k := range keys {
		byFirst[k.first] = k
	}
	next, prevSeal, pruned := cp.Seq+1, cp.Seal, 0
	for k, ok := byFirst[next]; ok && k.last <= floor; k, ok = byFirst[next] {
		data, err := readObject(ctx, b, k.key)
		if err != nil {
			return pruned, err
		}
		evs, err := p.Audit(ctx, store.AuditFilter{AfterSeq: next - 1, Limit: segment})
		if err != nil {
			return pruned, fmt.Errorf("auditarchive: read events from %d: %w", next, err)
		}
		if len(evs) == 0 || evs[len(evs)-1].Seq != k.last {
			return pruned, fmt.Errorf("auditarchive: %s does not match the store's events from %d: not pruned", k.key, next)
		}
		want, line, err := encodeSegment(evs, prevSeal, segment)
		if err != nil {
			return pruned, err
		}
		if !bytes.Equal(data, want) {
			return pruned, fmt.Errorf("auditarchive: %s in the bucket differs from the store's events: not pruned (sshward-ca audit verify --from-s3)", k.key)
		}
		seal := sealHash(line)
		if _, err := p.PruneAudit(ctx, next, store.AuditCheckpoint{Seq: k.last, Hash: evs[len(evs)-1].Hash, Seal: seal}); err != nil {
			return pruned, fmt.Errorf("auditarchive: prune %s: %w", k.key, err)
		}
		pruned++
		next, prevSeal = k.last+1, seal
	}
	return pruned, nil
}

// RunOptions are Run's settings.
type RunOptions struct {
	Segment int           // events per segment (DefaultSegment when 0)
	Every   time.Duration // how often to look for full segments
	// Prune drops archived events from the store (Prune) after each pass.
	Prune bool
	// Floor, when set, is the last event that may be pruned (e.g. the
	// lowest notifier cursor); nil: every archived event.
	Floor func(ctx context.Context) (uint64, error)
}

// Run archives (and prunes, with o.Prune) every o.Every until ctx ends,
// logging failures.
func Run(ctx context.Context, log Pruner, b Bucket, o RunOptions, logger *slog.Logger) {
	t := time.NewTicker(o.Every)
	defer t.Stop()
	for {
		n, err := Archive(ctx, log, b, o.Segment)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.WarnContext(ctx, "audit archive: cannot archive the audit log; retrying", "err", err)
		case n > 0:
			logger.InfoContext(ctx, "audit archive: sealed segments written", "count", n)
		}
		if o.Prune && err == nil {
			floor := ^uint64(0)
			if o.Floor != nil {
				floor, err = o.Floor(ctx)
			}
			if err == nil {
				n, err = Prune(ctx, log, b, o.Segment, floor)
			}
			switch {
			case err != nil && ctx.Err() == nil:
				logger.WarnContext(ctx, "audit archive: cannot prune archived events from the store; retrying", "err", err)
			case n > 0:
				logger.InfoContext(ctx, "audit archive: archived segments pruned from the store", "count", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func encodeSegment(evs []store.AuditEvent, prevSeal string, segment int) (data, seal []byte, err error) {
	var buf bytes.Buffer
	for i := range evs {
		line, err := json.Marshal(&evs[i])
		if err != nil {
			return nil, nil, fmt.Errorf("auditarchive: encode event %d: %w", evs[i].Seq, err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	sum := sha256.Sum256(buf.Bytes())
	s := Seal{First: evs[0].Seq, Last: evs[len(evs)-1].Seq, Head: evs[len(evs)-1].Hash, PrevSeal: prevSeal,
		EventsSHA256: hex.EncodeToString(sum[:]), Segment: segment}
	seal, err = json.Marshal(sealLine{Seal: &s})
	if err != nil {
		return nil, nil, err
	}
	buf.Write(seal)
	buf.WriteByte('\n')
	return buf.Bytes(), seal, nil
}

func sealHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

type segKey struct {
	key         string
	first, last uint64
}

// segmentKeys lists the segments in Seq order.
func segmentKeys(ctx context.Context, b Bucket) ([]segKey, error) {
	var out []segKey
	for o, err := range b.List(ctx, Prefix) {
		if err != nil {
			return nil, fmt.Errorf("auditarchive: list %s: %w", Prefix, err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(o.Key, Prefix), ".jsonl")
		a, z, ok := strings.Cut(name, "-")
		first, err1 := strconv.ParseUint(a, 10, 64)
		last, err2 := strconv.ParseUint(z, 10, 64)
		if !ok || err1 != nil || err2 != nil || !strings.HasSuffix(o.Key, ".jsonl") {
			continue // not a segment
		}
		out = append(out, segKey{o.Key, first, last})
	}
	slices.SortFunc(out, func(x, y segKey) int {
		if x.first < y.first {
			return -1
		} else if x.first > y.first {
			return 1
		}
		return 0
	})
	return out, nil
}

func readObject(ctx context.Context, b Bucket, key string) ([]byte, error) {
	rc, err := b.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("auditarchive: get %s: %w", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 1<<30))
	if err != nil {
		return nil, fmt.Errorf("auditarchive: read %s: %w", key, err)
	}
	return data, nil
}

// decodeSeal returns the seal of a segment and its line.
func decodeSeal(data []byte) (*Seal, []byte, error) {
	_, line, err := splitSegment(data)
	if err != nil {
		return nil, nil, err
	}
	var sl sealLine
	if err := json.Unmarshal(line, &sl); err != nil || sl.Seal == nil {
		return nil, nil, errors.New("the seal line does not decode")
	}
	return sl.Seal, line, nil
}

// splitSegment returns the event lines (with their newlines) and the seal
// line (without).
func splitSegment(data []byte) (events, seal []byte, err error) {
	body := bytes.TrimSuffix(data, []byte("\n"))
	i := bytes.LastIndexByte(body, '\n')
	if i < 0 || len(body) == len(data) {
		return nil, nil, errors.New("not a sealed segment (no seal line)")
	}
	return data[:i+1], body[i+1:], nil
}

// Report is what Verify found.
type Report struct {
	Segments int    `json:"segments"`
	Records  uint64 `json:"records"`
	Head     string `json:"head,omitempty"`      // Hash of the last archived event
	LastSeal string `json:"last_seal,omitempty"` // hash of the last seal
}

// Verify checks every segment in the bucket (see the package doc). The
// first violation is returned as a *store.ChainError naming the event, or
// the first event of the segment, where it is.
func Verify(ctx context.Context, b Bucket) (Report, error) {
	rep, _, err := verify(ctx, b)
	return rep, err
}

// sealed is what verify remembers of a segment: its last event's hash and
// its seal's hash.
type sealed struct{ head, seal string }

func verify(ctx context.Context, b Bucket) (Report, map[uint64]sealed, error) {
	ends := map[uint64]sealed{}
	rep, err := verifyInto(ctx, b, ends)
	return rep, ends, err
}

func verifyInto(ctx context.Context, b Bucket, ends map[uint64]sealed) (Report, error) {
	var rep Report
	keys, err := segmentKeys(ctx, b)
	if err != nil {
		return rep, err
	}
	prevHash, prevSeal, want, size := "", "", uint64(1), 0
	for _, k := range keys {
		bad := func(seq uint64, format string, args ...any) (Report, error) {
			return rep, &store.ChainError{Seq: seq, Reason: k.key + ": " + fmt.Sprintf(format, args...)}
		}
		if k.first != want {
			return bad(want, "segment starts at %d, want %d (segment missing)", k.first, want)
		}
		data, err := readObject(ctx, b, k.key)
		if err != nil {
			return rep, err
		}
		events, sealRaw, err := splitSegment(data)
		if err != nil {
			return bad(k.first, "%v", err)
		}
		var sl sealLine
		if err := json.Unmarshal(sealRaw, &sl); err != nil || sl.Seal == nil {
			return bad(k.first, "the seal line does not decode")
		}
		s := sl.Seal
		sum := sha256.Sum256(events)
		switch {
		case s.First != k.first || s.Last != k.last:
			return bad(k.first, "the seal names %d-%d", s.First, s.Last)
		case s.PrevSeal != prevSeal:
			return bad(k.first, "the seal does not name the previous segment's seal (segment replaced or reordered)")
		case hex.EncodeToString(sum[:]) != s.EventsSHA256:
			return bad(k.first, "the events do not match the seal's digest (segment edited)")
		case size != 0 && s.Segment != size:
			return bad(k.first, "segment size %d, earlier segments %d", s.Segment, size)
		}
		size = s.Segment
		sc := bufio.NewScanner(bytes.NewReader(events))
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var ev store.AuditEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				return bad(want, "event does not decode")
			}
			switch {
			case ev.Seq != want:
				return bad(want, "event claims seq %d", ev.Seq)
			case ev.PrevHash != prevHash:
				return bad(want, "previous hash does not match the event before (event deleted or replaced)")
			case store.AuditHash(&ev) != ev.Hash:
				return bad(want, "hash does not match content (event edited)")
			}
			prevHash = ev.Hash
			want++
		}
		if err := sc.Err(); err != nil {
			return bad(want, "%v", err)
		}
		if want-1 != s.Last || prevHash != s.Head {
			return bad(s.Last, "the seal's head does not match the last event")
		}
		prevSeal = sealHash(sealRaw)
		ends[s.Last] = sealed{head: prevHash, seal: prevSeal}
		rep.Segments++
	}
	rep.Records, rep.Head, rep.LastSeal = want-1, prevHash, prevSeal
	return rep, nil
}

// VerifyWithStore checks the archive and the store's log as one chain:
// the bucket's segments (Verify), the store's chain from its checkpoint
// (srep, from store.DB.VerifyAudit, already intact), and the link: the
// bucket holds the segment the checkpoint names (same last event hash,
// same seal), and where the bucket goes past the checkpoint its last
// archived event is the store's event of that seq. A segment deleted,
// edited or replaced, or a bucket that stops short of the checkpoint, is a
// *store.ChainError.
func VerifyWithStore(ctx context.Context, b Bucket, srep store.AuditReport, log interface {
	Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error)
}) (Report, error) {
	rep, ends, err := verify(ctx, b)
	if err != nil {
		return rep, err
	}
	cp := srep.Archived
	if cp.Seq > 0 {
		e, ok := ends[cp.Seq]
		switch {
		case rep.Records < cp.Seq:
			return rep, &store.ChainError{Seq: rep.Records + 1, Reason: fmt.Sprintf("the store pruned the events up to %d but the bucket's archive ends at %d (segments missing)", cp.Seq, rep.Records)}
		case !ok || e.head != cp.Hash || e.seal != cp.Seal:
			return rep, &store.ChainError{Seq: cp.Seq, Reason: "the bucket's segment ending at the store's checkpoint is not the one archived (segment replaced)"}
		}
	}
	// Past the checkpoint the bucket and the store overlap (archived, not
	// pruned yet): the last segment end within what srep covered must be
	// the store's event. The archiver may have written more since srep
	// was read, and pruned it: an event no longer in the store was
	// confirmed byte for byte when it was pruned.
	var x uint64
	for last := range ends {
		if last > cp.Seq && last <= uint64(srep.Records) && last > x {
			x = last
		}
	}
	if x > 0 {
		evs, err := log.Audit(ctx, store.AuditFilter{AfterSeq: x - 1, Limit: 1})
		if err != nil {
			return rep, fmt.Errorf("auditarchive: read event %d from the store: %w", x, err)
		}
		if len(evs) == 1 && evs[0].Seq == x && evs[0].Hash != ends[x].head {
			return rep, &store.ChainError{Seq: x, Reason: "the bucket's archived event is not the store's event of that seq"}
		}
	}
	return rep, nil
}

// Events returns the archived events after afterSeq (of type typ when not
// empty), at most limit (<= 0: no cap), read from the bucket's segments;
// each segment read is checked against its seal's digest. through is the
// last seq the bucket holds.
func Events(ctx context.Context, b Bucket, afterSeq uint64, typ string, limit int) (evs []store.AuditEvent, through uint64, err error) {
	keys, err := segmentKeys(ctx, b)
	if err != nil {
		return nil, 0, err
	}
	if len(keys) > 0 {
		through = keys[len(keys)-1].last
	}
	for _, k := range keys {
		if k.last <= afterSeq {
			continue
		}
		data, err := readObject(ctx, b, k.key)
		if err != nil {
			return nil, through, err
		}
		events, sealRaw, err := splitSegment(data)
		var sl sealLine
		if err == nil {
			err = json.Unmarshal(sealRaw, &sl)
		}
		sum := sha256.Sum256(events)
		if err != nil || sl.Seal == nil || hex.EncodeToString(sum[:]) != sl.Seal.EventsSHA256 {
			return nil, through, &store.ChainError{Seq: k.first, Reason: k.key + ": the events do not match the seal's digest (sshward-ca audit verify)"}
		}
		sc := bufio.NewScanner(bytes.NewReader(events))
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var ev store.AuditEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				return nil, through, fmt.Errorf("auditarchive: %s: event does not decode: %w", k.key, err)
			}
			if ev.Seq <= afterSeq || typ != "" && ev.Type != typ {
				continue
			}
			evs = append(evs, ev)
			if limit > 0 && len(evs) >= limit {
				return evs, through, nil
			}
		}
		if err := sc.Err(); err != nil {
			return nil, through, fmt.Errorf("auditarchive: %s: %w", k.key, err)
		}
	}
	return evs, through, nil
}
