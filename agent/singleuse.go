package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// singleUse remembers the serials of single-use certificates that opened a
// connection, on disk, so that neither a second connection nor a restart
// lets one be used twice. An entry is kept until its certificate expires;
// after that the validity check refuses the certificate anyway.
//
// File format (fileSingleUse): one "SERIAL VALID_BEFORE_UNIX\n" per use,
// appended and fsynced before the connection is admitted.
type singleUse struct {
	path string

	mu   sync.Mutex       // guards the fields below and appends to f
	seen map[uint64]int64 // serial → valid-before (Unix seconds)
	f    *os.File         // open for append
}

func openSingleUse(dataDir string, now time.Time, rnd io.Reader) (*singleUse, error) {
	path := filepath.Join(dataDir, fileSingleUse)
	seen := make(map[uint64]int64)
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("agent: read single-use serials: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		serial, before, ok := parseSingleUseLine(sc.Text())
		if ok && before > now.Unix() {
			seen[serial] = before
		}
	}
	// Rewrite without expired entries; a torn last line (crash during an
	// append) is dropped here, but its connection was never admitted.
	var b strings.Builder
	for serial, before := range seen {
		fmt.Fprintf(&b, "%d %d\n", serial, before)
	}
	if err := writeFileAtomic(path, []byte(b.String()), rnd); err != nil {
		return nil, fmt.Errorf("agent: compact single-use serials: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent: open single-use serials: %w", err)
	}
	return &singleUse{path: path, seen: seen, f: f}, nil
}

func parseSingleUseLine(line string) (serial uint64, before int64, ok bool) {
	a, b, found := strings.Cut(line, " ")
	if !found {
		return 0, 0, false
	}
	serial, err1 := strconv.ParseUint(a, 10, 64)
	before, err2 := strconv.ParseInt(b, 10, 64)
	return serial, before, err1 == nil && err2 == nil
}

// seenBefore reports whether serial was used already.
func (u *singleUse) seenBefore(serial uint64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.seen[serial]
	return ok
}

// use records serial; it fails if the serial was used before or the
// record cannot be made durable (then the connection must be refused).
func (u *singleUse) use(serial uint64, validBefore int64) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.seen[serial]; ok {
		return errSingleUseSeen
	}
	if _, err := fmt.Fprintf(u.f, "%d %d\n", serial, validBefore); err != nil {
		return fmt.Errorf("agent: record single-use serial: %w", err)
	}
	if err := u.f.Sync(); err != nil {
		return fmt.Errorf("agent: record single-use serial: %w", err)
	}
	u.seen[serial] = validBefore
	return nil
}

func (u *singleUse) close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.f.Close()
}
