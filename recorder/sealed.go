package recorder

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/sshward/sshward/recorder/atrest"
)

// A sealed cast is a spool cast encrypted to the playback server's age
// recipients (SpoolConfig.Recipients): DIR/<id>.cast is in the at-rest
// format of recorder/atrest (Magic, then frames, each one age stream of
// whole asciicast lines), so that a stolen spool reveals no session text.
// The agent holds no identity: it cannot read its own cast back. What it
// needs after a crash (the digest to sign, the counts of the metadata) is
// kept beside the cast in DIR/<id>.cast.state, one fixed-size record per
// frame:
//
//	uint64 BE plaintext end ‖ uint64 BE file end ‖ SHA-256 state (108 bytes,
//	encoding.BinaryMarshaler) ‖ int64 BE bytes out ‖ int64 BE bytes in ‖
//	int64 BE unix nanoseconds of the frame ‖ uint32 BE CRC-32 (IEEE) of the rest
//
// Every frame's plaintext is padded with spaces before its last '\n' so
// that it ends on a 64-byte boundary (JSON allows the trailing blanks):
// the SHA-256 state at a block boundary holds no buffered input, only the
// chaining value and the length, which reveal nothing of the text.
// A record is written after its frame; the repair after a crash keeps the
// frames up to the last record that matches one, so the digest it resumes
// from the state is the digest of exactly what remains.

// sealedStateSuffix names the state file of a sealed cast.
const sealedStateSuffix = ".state"

// sealedStatePath returns the state file of the sealed cast at castPath.
func sealedStatePath(castPath string) string { return castPath + sealedStateSuffix }

const (
	shaStateLen     = 108 // len of crypto/sha256's MarshalBinary
	sealedRecordLen = 8 + 8 + shaStateLen + 8 + 8 + 8 + 4
	sealedBlock     = 64 // SHA-256 block size: frames end on it
)

// sealedRecord is one record of a state file.
type sealedRecord struct {
	PlainEnd, FileEnd int64  // after the frame: plaintext bytes, file bytes
	SHA               []byte // marshalled SHA-256 state over PlainEnd bytes
	BytesOut, BytesIn int64  // the recording's counts when the frame was sealed
	Time              time.Time
}

func (r sealedRecord) marshal() []byte {
	b := make([]byte, 0, sealedRecordLen)
	b = binary.BigEndian.AppendUint64(b, uint64(r.PlainEnd))
	b = binary.BigEndian.AppendUint64(b, uint64(r.FileEnd))
	b = append(b, r.SHA...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.BytesOut))
	b = binary.BigEndian.AppendUint64(b, uint64(r.BytesIn))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

func parseSealedRecord(b []byte) (sealedRecord, error) {
	if len(b) != sealedRecordLen || crc32.ChecksumIEEE(b[:len(b)-4]) != binary.BigEndian.Uint32(b[len(b)-4:]) {
		return sealedRecord{}, errors.New("corrupt record")
	}
	r := sealedRecord{
		PlainEnd: int64(binary.BigEndian.Uint64(b[0:])),
		FileEnd:  int64(binary.BigEndian.Uint64(b[8:])),
		SHA:      bytes.Clone(b[16 : 16+shaStateLen]),
	}
	b = b[16+shaStateLen:]
	r.BytesOut = int64(binary.BigEndian.Uint64(b[0:]))
	r.BytesIn = int64(binary.BigEndian.Uint64(b[8:]))
	r.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[16:])))
	if r.PlainEnd < 0 || r.FileEnd < int64(len(atrest.Magic)) || r.PlainEnd%sealedBlock != 0 {
		return sealedRecord{}, errors.New("corrupt record")
	}
	return r, nil
}

// digest returns the hex SHA-256 the record's state finishes to.
func (r sealedRecord) digest() (string, error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(r.SHA); err != nil {
		return "", fmt.Errorf("recorder: sealed cast state: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readSealedRecords reads the whole records of a state file (a torn last
// one, cut by a crash, is left out). A corrupt record ends the list:
// corrupt then says which (the records after it are not trusted).
func readSealedRecords(path string) (recs []sealedRecord, corrupt string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	out := make([]sealedRecord, 0, len(data)/sealedRecordLen)
	for i := 0; i+sealedRecordLen <= len(data); i += sealedRecordLen {
		r, err := parseSealedRecord(data[i : i+sealedRecordLen])
		if err != nil {
			return out, fmt.Sprintf("state record %d of %d is corrupt: the cast is cut before it", i/sealedRecordLen, len(data)/sealedRecordLen), nil
		}
		out = append(out, r)
	}
	return out, "", nil
}

// lastSealedRecord reads only the last whole record of a state file; ok is
// false when there is none (or no state file yet).
func lastSealedRecord(path string) (r sealedRecord, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, false, nil // no frame sealed yet
	}
	if err != nil {
		return r, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return r, false, err
	}
	n := fi.Size() / sealedRecordLen
	if n == 0 {
		return r, false, nil
	}
	b := make([]byte, sealedRecordLen)
	if _, err := f.ReadAt(b, (n-1)*sealedRecordLen); err != nil {
		return r, false, fmt.Errorf("recorder: sealed cast state %s: %w", path, err)
	}
	r, err = parseSealedRecord(b)
	if err != nil {
		return r, false, fmt.Errorf("recorder: sealed cast state %s: last record: %w", path, err)
	}
	return r, true, nil
}

// isSealed reports whether the cast at path is sealed.
func isSealed(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return atrest.IsEncrypted(f)
}

// sealer turns a fileSink into a sealed cast: whole lines are kept in pend
// and sealed as one frame per flush (or when pend passes fileBuffer).
type sealer struct {
	recipients []age.Recipient
	state      File                   // the state file
	counts     func() (out, in int64) // the recording's counts
	now        func() time.Time
	pend       []byte
	fileEnd    int64 // bytes in the cast file
}

// sealLocked seals the pending lines as one frame: padded to a block
// boundary, encrypted, written in one call, hashed, and its record
// written. k.mu is held.
func (k *fileSink) sealLocked() error {
	z := k.sealer
	if k.err != nil || len(z.pend) == 0 {
		return k.err
	}
	plain := z.pend
	if plain[len(plain)-1] != '\n' {
		k.err = errors.New("recorder: sealed cast: a flush that does not end a line")
		return k.err
	}
	if pad := (sealedBlock - (k.size+int64(len(plain)))%sealedBlock) % sealedBlock; pad > 0 {
		p := make([]byte, 0, len(plain)+int(pad))
		p = append(p, plain[:len(plain)-1]...)
		p = append(p, bytes.Repeat([]byte{' '}, int(pad))...)
		plain = append(p, '\n')
	}
	frame, err := atrest.Seal(plain, z.recipients)
	if err != nil {
		k.err = err
		return err
	}
	if err := writeAll(k.f, frame); err != nil {
		k.err = err
		return err
	}
	z.pend = z.pend[:0]
	if cap(z.pend) > 4*fileBuffer {
		z.pend = nil
	}
	z.fileEnd += int64(len(frame))
	k.hash.Write(plain)
	k.size += int64(len(plain))
	st, err := k.hash.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		k.err = err
		return err
	}
	out, in := z.counts()
	rec := sealedRecord{PlainEnd: k.size, FileEnd: z.fileEnd, SHA: st, BytesOut: out, BytesIn: in, Time: z.now()}
	if err := writeAll(z.state, rec.marshal()); err != nil {
		k.err = err
		return err
	}
	return nil
}

// sealedOnDisk cuts a sealed cast and its state file back to the last
// frame a record vouches for (what a crash or a failed write left) and
// returns that record; ok is false when no frame is left (the cast then
// holds only Magic). note says why frames were dropped beyond a crash's
// torn tail (a corrupt state record). Nothing is decrypted.
func sealedOnDisk(castPath string) (rec sealedRecord, ok bool, note string, err error) {
	statePath := sealedStatePath(castPath)
	recs, note, err := readSealedRecords(statePath)
	if errors.Is(err, fs.ErrNotExist) {
		recs, err = nil, nil
	}
	if err != nil {
		return rec, false, note, err
	}
	f, err := os.OpenFile(castPath, os.O_RDWR, 0)
	if err != nil {
		return rec, false, note, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return rec, false, note, err
	}
	var idx atrest.Index
	if err := atrest.Scan(f, fi.Size(), &idx); err != nil {
		// The frames before the corrupt header stand.
		note = strings.TrimPrefix(note+"; "+strings.TrimPrefix(err.Error(), "atrest: ")+": the cast is cut before it", "; ")
	}
	// The last record that ends where a whole frame ends.
	ends := make(map[int64]int64, len(idx.Frames))
	for _, fr := range idx.Frames {
		ends[fr.Disk+int64(fr.Len)] = fr.Plain + int64(fr.PLen)
	}
	keep := -1
	for i := len(recs) - 1; i >= 0; i-- {
		if p, found := ends[recs[i].FileEnd]; found && p == recs[i].PlainEnd {
			keep = i
			break
		}
	}
	cutTo, stateTo := int64(len(atrest.Magic)), int64(0)
	if keep >= 0 {
		rec, ok = recs[keep], true
		cutTo, stateTo = rec.FileEnd, int64(keep+1)*sealedRecordLen
	}
	if fi.Size() != cutTo {
		if err := f.Truncate(cutTo); err != nil {
			return rec, ok, note, fmt.Errorf("recorder: cut sealed cast %s: %w", castPath, err)
		}
		if err := f.Sync(); err != nil {
			return rec, ok, note, fmt.Errorf("recorder: cut sealed cast %s: %w", castPath, err)
		}
	}
	if err := os.Truncate(statePath, stateTo); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rec, ok, note, fmt.Errorf("recorder: cut sealed cast state %s: %w", statePath, err)
	}
	return rec, ok, note, nil
}

// sealedDigest is Digest for a sealed cast: the digest and size of its
// plaintext, from the record of its last frame, without reading it. The
// file is not changed; frames no record vouches for are not counted.
func sealedDigest(castPath string) (string, int64, error) {
	rec, ok, err := lastSealedRecord(sealedStatePath(castPath))
	if err != nil {
		return "", 0, err
	}
	if !ok {
		return emptySHA256, 0, nil
	}
	sum, err := rec.digest()
	return sum, rec.PlainEnd, err
}

// castDigest is Digest for a cast of either kind.
func castDigest(castPath string) (string, int64, error) {
	sealed, err := isSealed(castPath)
	if err != nil {
		return "", 0, fmt.Errorf("recorder: digest: %w", err)
	}
	if sealed {
		return sealedDigest(castPath)
	}
	return Digest(castPath)
}

// readSealedChunk returns whole frames of the sealed cast f from the frame
// that starts at plaintext offset up to limit bytes (at least one frame),
// never past fileEnd; idx caches the scanned frames. next is the plaintext
// offset after them.
func readSealedChunk(f io.ReaderAt, idx *atrest.Index, offset, fileEnd int64, limit int) (chunk []byte, next int64, err error) {
	if fileEnd > idx.End {
		if err := atrest.Scan(f, fileEnd, idx); err != nil {
			return nil, 0, err
		}
	}
	i := -1
	for j := len(idx.Frames) - 1; j >= 0; j-- {
		if idx.Frames[j].Plain == offset {
			i = j
			break
		}
		if idx.Frames[j].Plain < offset {
			break
		}
	}
	if i < 0 {
		if offset >= idx.Size {
			return nil, offset, nil
		}
		return nil, 0, fmt.Errorf("recorder: the playback server holds %d bytes of a sealed cast, not the end of a frame", offset)
	}
	start, end := idx.Frames[i].Header, idx.Frames[i].Header
	next = offset
	for j := i; j < len(idx.Frames); j++ {
		fr := idx.Frames[j]
		fend := fr.Disk + int64(fr.Len)
		if fend > fileEnd || (j > i && fend-start > int64(limit)) {
			break
		}
		end, next = fend, fr.Plain+int64(fr.PLen)
	}
	if end == start {
		return nil, offset, nil
	}
	chunk = make([]byte, end-start)
	if _, err := f.ReadAt(chunk, start); err != nil {
		return nil, 0, fmt.Errorf("recorder: read sealed cast at %d: %w", start, err)
	}
	return chunk, next, nil
}

// sealedFileEnd returns where in the file the frame that ends at plaintext
// offset plain ends (the end of Magic for 0; 0 when no frame ends there).
func sealedFileEnd(idx *atrest.Index, plain int64) int64 {
	if plain == 0 {
		return int64(len(atrest.Magic))
	}
	for j := len(idx.Frames) - 1; j >= 0; j-- {
		fr := idx.Frames[j]
		if end := fr.Plain + int64(fr.PLen); end == plain {
			return fr.Disk + int64(fr.Len)
		} else if end < plain {
			break
		}
	}
	return 0
}
