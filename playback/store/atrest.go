package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"

	"filippo.io/age"
	"github.com/sshward/sshward/recorder/atrest"
)

// File is a recording's cast or side blob opened for reading: its
// plaintext, whether it is stored encrypted (recorder/atrest) or not.
type File interface {
	io.Reader
	io.ReaderAt
	io.Seeker
	io.Closer
	Stat() (fs.FileInfo, error)
}

// appendFile is the disk state of one append file (a cast or a side blob)
// of a live recording: its plaintext size is kept by the caller.
type appendFile struct {
	disk      int64 // bytes on disk
	encrypted bool  // frames of recorder/atrest, else the plaintext itself
}

// encrypting reports whether new files are encrypted.
func (s *Store) encrypting() bool {
	return s.cfg.Keys != nil && len(s.cfg.Keys.Recipients) > 0
}

// newAppendFile is the state of an empty file about to be written.
func (s *Store) newAppendFile() appendFile { return appendFile{encrypted: s.encrypting()} }

// writeChunk appends data (plaintext) to f, whose state is af, fsyncs, and
// returns the new state. A failed write is cut off: nothing of it stays.
func (s *Store) writeChunk(f *os.File, af appendFile, data []byte) (appendFile, error) {
	out := data
	if af.encrypted {
		if !s.encrypting() {
			return af, errors.New("this recording is stored encrypted but recordings.encryption has no recipients")
		}
		fr, err := atrest.Seal(data, s.cfg.Keys.Recipients)
		if err != nil {
			return af, err
		}
		out = fr
		if af.disk == 0 {
			out = append([]byte(atrest.Magic), fr...)
		}
	}
	_, err := f.WriteAt(out, af.disk)
	if err == nil {
		err = s.sync(f)
	}
	if err != nil {
		_ = f.Truncate(af.disk)
		return af, err
	}
	af.disk += int64(len(out))
	return af, nil
}

// recoverFile reads a live recording's file after a restart: it cuts a
// frame a crash tore (encrypted) or, with lines, what follows the last
// '\n' (plaintext), and returns the plaintext size, its sha256 and the
// file's state.
func (s *Store) recoverFile(f *os.File, lines bool) (int64, hash.Hash, appendFile, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, nil, appendFile{}, err
	}
	if fi.Size() == 0 {
		return 0, sha256.New(), s.newAppendFile(), nil
	}
	enc, err := atrest.IsEncrypted(f)
	if err != nil {
		return 0, nil, appendFile{}, err
	}
	if !enc {
		if !lines {
			h := sha256.New()
			n, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size()))
			return n, h, appendFile{disk: n}, err
		}
		size, h, err := recoverCast(f)
		return size, h, appendFile{disk: size}, err
	}
	x, err := atrest.NewFile(f, s.identities())
	if err != nil {
		return 0, nil, appendFile{}, err
	}
	idx := x.Index()
	if idx.End != fi.Size() {
		if err := f.Truncate(idx.End); err != nil {
			return 0, nil, appendFile{}, err
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(x, 0, idx.Size)); err != nil {
		return 0, nil, appendFile{}, fmt.Errorf("decrypt: %w", err)
	}
	return idx.Size, h, appendFile{disk: idx.End, encrypted: true}, nil
}

func (s *Store) identities() []age.Identity {
	if s.cfg.Keys == nil {
		return nil
	}
	return s.cfg.Keys.Identities
}

// openPlain wraps f, an encrypted file or not, as a File.
func (s *Store) openPlain(f *os.File) (File, error) {
	enc, err := atrest.IsEncrypted(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if !enc {
		return f, nil
	}
	x, err := atrest.NewFile(f, s.identities())
	if err != nil {
		f.Close()
		return nil, err
	}
	return x, nil
}

// Readable reads the first byte of a recording's cast: an error wrapping
// atrest.ErrNoIdentity says no configured identity decrypts it. A missing
// or empty cast is readable.
func (s *Store) Readable(id string) error {
	f, err := s.OpenCast(id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("store: read cast %s: %w", id, err)
	}
	return nil
}
