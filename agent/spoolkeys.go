package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"filippo.io/age"

	"github.com/sshward/sshward/recorder/atrest"
)

// spoolRecipientsFile caches, in the data directory (0600), the age
// recipients the playback server asked the spool to be sealed to, one per
// line: a restarted agent seals its first recordings before it reaches
// the server again.
const spoolRecipientsFile = "spool-recipients"

// spoolKeys are the recipients new recordings are sealed to
// (recorder.SpoolConfig.Recipients): the cached set the playback server
// last named, else PlaybackConfig.SpoolRecipients, else none (plaintext).
type spoolKeys struct {
	path string
	rnd  io.Reader
	log  *slog.Logger

	learnMu sync.Mutex // one learn at a time (shipper workers call it)
	mu      sync.Mutex // guards the fields below
	strs    []string
	parsed  []age.Recipient
	warned  bool
	learned bool // strs came from the server (the cache)
}

// openSpoolKeys loads the cache in dataDir, or configured when there is
// none.
func openSpoolKeys(ctx context.Context, dataDir string, configured []string, rnd io.Reader, log *slog.Logger) (*spoolKeys, error) {
	k := &spoolKeys{path: filepath.Join(dataDir, spoolRecipientsFile), rnd: rnd, log: log}
	lines, err := cachedSpoolRecipients(dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if len(configured) > 0 {
			if err := k.set(configured); err != nil {
				return nil, fmt.Errorf("agent: spool recipients: %w", err)
			}
		}
	case err != nil:
		return nil, fmt.Errorf("agent: spool recipients: %w", err)
	default:
		if err := k.set(lines); err != nil {
			return nil, fmt.Errorf("agent: spool recipients cached in %s: %w", k.path, err)
		}
		k.learned = true
	}
	if len(k.parsed) == 0 {
		log.WarnContext(ctx, "agent: the spool is not encrypted: recordings wait in it in plaintext until the playback server names its recordings.encryption recipients (or --spool-recipients gives them)")
	} else {
		log.InfoContext(ctx, "agent: recordings are sealed in the spool", "recipients", len(k.parsed), "from_playback", k.learned)
	}
	return k, nil
}

func (k *spoolKeys) set(strs []string) error {
	parsed, err := atrest.ParseRecipients(strs)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.strs, k.parsed = slices.Clone(strs), parsed
	k.mu.Unlock()
	return nil
}

// recipients is recorder.SpoolConfig.Recipients.
func (k *spoolKeys) recipients() []age.Recipient {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.parsed) == 0 && !k.warned {
		k.warned = true
		k.log.Warn("agent: recording into a plaintext spool: no playback recipients known yet (see --spool-recipients)")
	}
	return k.parsed
}

// learn is recorder.ShipperConfig.OnRecipients: a set the playback server
// named (over TLS checked against the CA root, in the answer to a request
// signed by this host) replaces the current one and the cache. An answer
// without recipients changes nothing: the spool is never downgraded to
// plaintext by a server's silence (delete the cache file to stop sealing).
func (k *spoolKeys) learn(strs []string) {
	k.learnMu.Lock()
	defer k.learnMu.Unlock()
	k.mu.Lock()
	same := slices.Equal(k.strs, strs) && k.learned
	k.mu.Unlock()
	if same {
		return
	}
	if err := k.set(strs); err != nil {
		k.log.Error("agent: the playback server named spool recipients that do not parse; keeping the current ones", "err", err)
		return
	}
	var b bytes.Buffer
	b.WriteString("# age recipients the playback server seals this agent's spool to (sshward-agent writes this file)\n")
	for _, s := range strs {
		b.WriteString(s + "\n")
	}
	if err := writeFileAtomic(k.path, b.Bytes(), k.rnd); err != nil {
		k.log.Error("agent: cannot cache the spool recipients; a restart seals to the previous set until the playback server is reached", "err", err)
	}
	k.mu.Lock()
	k.learned, k.warned = true, false
	k.mu.Unlock()
	k.log.Info("agent: sealing new recordings in the spool to the playback server's recipients", "recipients", len(strs))
}

// cachedSpoolRecipients reads DATA/spool-recipients: the recipients, one
// a line, without comments.
func cachedSpoolRecipients(dataDir string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, spoolRecipientsFile))
	if err != nil {
		return nil, err
	}
	var lines []string
	for l := range strings.SplitSeq(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines, nil
}
