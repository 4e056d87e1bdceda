package recorder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// repairAll repairs every unfinished recording and removes temporary files
// of metadata writes that a crash interrupted. Only a failure to read the
// directory is returned; a recording that cannot be repaired is logged.
func (s *Spool) repairAll(ctx context.Context) error {
	des, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("recorder: open spool: %w", err)
	}
	log := s.cfg.Logger
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".") && strings.Contains(name, ".json.tmp-") {
			if err := os.Remove(filepath.Join(s.cfg.Dir, name)); err != nil {
				log.WarnContext(ctx, "recorder: remove stale temporary file", "file", name, "err", err)
			}
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok || CheckSessionID(id) != nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("recorder: open spool: %w", err)
		}
		m, err := readMetadata(s.metaPath(id))
		if err != nil {
			log.ErrorContext(ctx, "recorder: unreadable metadata left in spool", "session_id", id, "err", err)
			continue
		}
		if m.Finished {
			continue
		}
		if err := s.repair(&m); err != nil {
			log.ErrorContext(ctx, "recorder: repair recording", "session_id", id, "err", err)
			continue
		}
		log.WarnContext(ctx, "recorder: repaired recording left open by a crash",
			"session_id", id, "tier", m.Tier, "cast_bytes", m.CastBytes, "incomplete", m.Incomplete)
	}
	return nil
}

// repair finishes m, whose session was being recorded when the agent
// stopped: the cast keeps every whole line and nothing else.
func (s *Spool) repair(m *Metadata) error {
	m.Complete, m.Finished = false, true
	m.Incomplete = fmt.Sprintf("agent stopped before the session ended (repaired at %s)",
		s.cfg.Now().UTC().Format(time.RFC3339))
	m.BytesOut, m.BytesIn, m.CastBytes, m.SHA256, m.Blob = 0, 0, 0, "", nil

	castPath := s.castPath(m.SessionID)
	if sealed, err := isSealed(castPath); err == nil && sealed {
		return s.repairSealed(m, castPath)
	}
	_, err := cutToLastNewline(castPath)
	if errors.Is(err, fs.ErrNotExist) {
		m.Incomplete += "; the cast file is missing"
		return s.writeFinal(context.Background(), *m)
	}
	if err != nil {
		return err
	}
	c, err := countCast(castPath)
	switch {
	case err != nil:
		// Keep every line: the bytes are evidence even where they do not
		// parse. Say so instead.
		m.Incomplete += "; " + err.Error()
	case !c.header:
		m.Incomplete += "; no complete line was written"
	}
	m.BytesOut, m.BytesIn = c.out, c.in
	m.End = m.Start.Add(time.Duration(c.last * float64(time.Second)))
	if m.SHA256, m.CastBytes, err = Digest(castPath); err != nil {
		return err
	}
	// The side blob keeps every byte that reached it (blob_spool.go).
	if m.Blob, err = blobInfoOnDisk(s.blobPath(m.SessionID), blobStreamEnd(castPath)); err != nil {
		return err
	}
	return s.writeFinal(context.Background(), *m)
}

// castCounts is what countCast found in a cast.
type castCounts struct {
	header  bool    // the header line is there
	out, in int64   // bytes of "o" and "i" data
	last    float64 // time of the last event
}

// countCast reads the cast at path and adds up its data, as far as it parses.
func countCast(path string) (castCounts, error) {
	var c castCounts
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	rd, err := NewReader(f)
	if err != nil {
		var size int64
		if fi, serr := f.Stat(); serr == nil {
			size = fi.Size()
		}
		if size == 0 && errors.Is(err, ErrMalformed) {
			return c, nil // empty: no header was ever written
		}
		return c, err
	}
	c.header = true
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return c, nil
		}
		if err != nil {
			return c, err
		}
		switch e.Code {
		case CodeOutput:
			c.out += int64(len(e.Data))
		case CodeInput:
			c.in += int64(len(e.Data))
		}
		c.last = e.Time
	}
}

// cutToLastNewline truncates the file at path after its last '\n' (to
// nothing if there is none), fsyncs it, and returns how many bytes it cut.
func cutToLastNewline(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("cut %s to its last line: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("cut %s to its last line: %w", path, err)
	}
	size := fi.Size()
	keep, err := lastNewlineEnd(f, size)
	if err != nil {
		return 0, fmt.Errorf("cut %s to its last line: %w", path, err)
	}
	if keep == size {
		return 0, nil
	}
	if err := f.Truncate(keep); err != nil {
		return 0, fmt.Errorf("cut %s to its last line: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("cut %s to its last line: %w", path, err)
	}
	return size - keep, nil
}

// lastNewlineEnd returns the offset just past the last '\n' in the first
// size bytes of f, reading backwards in blocks; 0 if there is none.
func lastNewlineEnd(f io.ReaderAt, size int64) (int64, error) {
	buf := make([]byte, 32<<10)
	for end := size; end > 0; {
		start := max(0, end-int64(len(buf)))
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

// Digest returns the sha256 (hex) and size of the file at path, e.g. a cast
// to check against its Metadata.
func Digest(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("recorder: digest: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("recorder: digest %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// repairSealed is repair for a sealed cast (sealed.go), which the agent
// cannot read: the frames up to the last record are kept, and the digest,
// counts and end come from that record.
func (s *Spool) repairSealed(m *Metadata, castPath string) error {
	rec, ok, note, err := sealedOnDisk(castPath)
	if err != nil {
		return err
	}
	if note != "" {
		m.Incomplete += "; " + note
	}
	if !ok {
		m.Incomplete += "; no complete line was written"
		m.SHA256, m.CastBytes, m.End = emptySHA256, 0, m.Start
		return s.writeFinal(context.Background(), *m)
	}
	if m.SHA256, err = rec.digest(); err != nil {
		return err
	}
	m.CastBytes, m.BytesOut, m.BytesIn, m.End = rec.PlainEnd, rec.BytesOut, rec.BytesIn, rec.Time.UTC()
	return s.writeFinal(context.Background(), *m)
}
