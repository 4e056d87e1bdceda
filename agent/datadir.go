package agent

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Files in the data directory. Everything is 0600 in a 0700 directory: the
// host key is a secret, and the rest tells an attacker what the host trusts.
const (
	fileHostKey     = "host_ed25519_key"
	fileHostCert    = "host_ed25519_key-cert.pub"
	fileUserCA      = "user_ca.pub"
	fileIdentity    = "identity.json"
	fileRevocations = "revocations.json"
	fileSingleUse   = "single_use_serials"
	dirSpool        = "spool"
)

// SpoolDir is where Serve keeps recordings when Config.Spool is nil.
func SpoolDir(dataDir string) string { return filepath.Join(dataDir, dirSpool) }

// writeFileAtomic replaces path with data (mode 0600): a temporary file in
// the same directory, fsync, rename, fsync of the directory, so a crash
// leaves the old or the new content and never a torn file.
func writeFileAtomic(path string, data []byte, rnd io.Reader) error {
	var b [8]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return fmt.Errorf("write %s: random name: %w", path, err)
	}
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(b[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
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
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// readJSONFile decodes the cache file name in dataDir into v; a file that is
// not there is (false, nil). what names the cache in errors.
func readJSONFile(dataDir, name, what string, v any) (bool, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("agent: read %s: %w", what, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("agent: decode %s %s: %w", what, name, err)
	}
	return true, nil
}
