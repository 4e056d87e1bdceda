// Package backupfile holds what the sshward-ca and sshward-playback backup
// files share: a tar of a server directory, written and read with the
// checks a restore needs (no entry leaves the directory, files only).
package backupfile

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
)

// AddFile writes f (from its start) into tw as name.
func AddFile(tw *tar.Writer, name string, f *os.File, mode fs.FileMode, mtime time.Time) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return TarAdd(tw, mtime)(name, fi.Size(), mode, func(w io.Writer) error {
		n, err := io.Copy(w, f)
		if err == nil && n != fi.Size() {
			err = fmt.Errorf("%s changed size while it was read", name)
		}
		return err
	})
}

// Untar extracts r into dir: regular files and directories only, names
// that stay inside dir, modes without group or other bits.
func Untar(r io.Reader, dir string) (int, error) {
	tr := tar.NewReader(r)
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		name := path.Clean(h.Name)
		if name == "." || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return n, fmt.Errorf("entry %q leaves the directory", h.Name)
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		mode := fs.FileMode(h.Mode).Perm() &^ 0o077
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, mode|0o700); err != nil {
				return n, err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
				return n, err
			}
			f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
			if err != nil {
				return n, err
			}
			_, err = io.Copy(f, tr)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return n, err
			}
			n++
		default:
			return n, fmt.Errorf("entry %q is neither a file nor a directory", h.Name)
		}
	}
}

// Create writes a backup file at path through write, all or nothing: into
// a 0600 temporary file beside it, synced, then renamed into place. It
// answers the file's size.
func Create(path string, write func(io.Writer) error) (int64, error) {
	tmp := path + ".tmp-" + RandHex()
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp) // after the rename, a no-op
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, nil // written and in place; only the size is unknown
	}
	return fi.Size(), nil
}

// EmptyTarget refuses a restore into a directory that holds anything.
func EmptyTarget(dir string) error {
	if des, err := os.ReadDir(dir); err == nil && len(des) > 0 {
		return fmt.Errorf("%s is not empty: restore into a new or empty directory", dir)
	}
	return nil
}

// Restore decrypts the backup at from with pass and unpacks it into a
// fresh directory beside dir; check (given that directory) must accept
// what it holds, and only then does it become dir (empty or missing, see
// EmptyTarget): a restore that fails half-way leaves nothing that looks
// like a server directory. what names the program whose backup it is.
func Restore(from, dir string, pass []byte, what string, check func(work string) error) (files int, err error) {
	id, err := age.NewScryptIdentity(string(pass))
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	in, err := os.Open(from)
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	defer in.Close()
	dec, err := age.Decrypt(in, id)
	if err != nil {
		return 0, fmt.Errorf("%s does not open with this passphrase, or is not an %s backup: %v", from, what, err)
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	work, err := os.MkdirTemp(parent, "."+what+"-restore-")
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	defer os.RemoveAll(work)
	if files, err = Untar(dec, work); err != nil {
		return 0, fmt.Errorf("restore from %s: %w (nothing was restored)", from, err)
	}
	if err := check(work); err != nil {
		return 0, err
	}
	os.Remove(dir) // empty or missing: EmptyTarget
	if err := os.Rename(work, dir); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	return files, nil
}

// RandHex is a short random name part for temporary files.
func RandHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ReadPassphrase reads the passphrase from file's first line when file is
// set, else takes env; empty is refused. Never a flag value: it would show
// in ps.
func ReadPassphrase(env, file, envName string) ([]byte, error) {
	p := env
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read passphrase: %w", err)
		}
		p, _, _ = strings.Cut(string(b), "\n")
		p = strings.TrimRight(p, "\r")
	}
	if p == "" {
		return nil, fmt.Errorf("a passphrase is required: --passphrase-file FILE or $%s", envName)
	}
	return []byte(p), nil
}

// Skip names what no backup holds: locks, temporary files, and anything but
// files and directories (sockets, pipes, devices, symlinks).
func Skip(rel string, d fs.DirEntry) bool {
	base := path.Base(rel)
	if strings.HasSuffix(base, ".lock") || strings.Contains(base, ".tmp") {
		return true
	}
	return d.Type()&(fs.ModeSocket|fs.ModeNamedPipe|fs.ModeDevice|fs.ModeSymlink) != 0
}

// AddDir writes dir's directories and regular files into tw under their
// slash-separated relative names, leaving out what skip names, and returns
// the files written.
func AddDir(tw *tar.Writer, dir string, skip func(rel string, d fs.DirEntry) bool) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if skip(rel, d) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: int64(info.Mode().Perm()), ModTime: info.ModTime()})
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n++
		return AddFile(tw, rel, f, info.Mode().Perm(), info.ModTime())
	})
	return n, err
}

// TarAdd returns a function that writes each file it is given into tw
// (the shape of playback/store.BackupAdd): a header of size bytes with
// mode and mtime, then what write writes.
func TarAdd(tw *tar.Writer, mtime time.Time) func(name string, size int64, mode fs.FileMode, write func(io.Writer) error) error {
	return func(name string, size int64, mode fs.FileMode, write func(io.Writer) error) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: int64(mode.Perm()), ModTime: mtime}); err != nil {
			return err
		}
		return write(tw)
	}
}
