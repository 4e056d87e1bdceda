package recorder

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/recorder/atrest"
)

// Shipper defaults.
const (
	DefaultShipPollInterval = time.Second
	DefaultShipChunkBytes   = 1 << 20
	DefaultShipMinBackoff   = time.Second
	DefaultShipMaxBackoff   = time.Minute
	DefaultShipWorkers      = 16
	DefaultShipTimeout      = 30 * time.Second
)

// maxShipChunk keeps every chunk within MaxChunkBytes: readChunk may add
// one line of up to MaxLineBytes (and its newline) to a chunk.
const maxShipChunk = MaxChunkBytes - MaxLineBytes - 1

// ShipperConfig configures NewShipper. Spool, URL, Cert and one of RootPEM
// or HTTPClient are required; every other zero value is a default.
type ShipperConfig struct {
	// Spool is the agent's open spool; the shipper reads its recordings and
	// removes each once the playback server acknowledged all of it.
	Spool *Spool
	// URL is the playback server's base URL (https://host:port).
	URL string
	// Fallbacks are more playback servers (replicas sharing an object
	// store): after FailoverAfter consecutive failures to reach the current
	// one, the shipper moves to the next, where every recording resumes at
	// the offset that server holds (from 0 on one that never saw it).
	Fallbacks []string
	// FailoverAfter is how many consecutive unreachable answers make the
	// shipper move on (default 3).
	FailoverAfter int
	// RootPEM is the CA's X.509 root, which the playback server's TLS
	// certificate chains to.
	RootPEM []byte
	// Cert returns the host's current certificate and key. It is called
	// for every request, so a renewed certificate is used at once.
	Cert func() (*ssh.Certificate, ssh.Signer)
	// Logger receives shipping progress and failures; default discards.
	Logger *slog.Logger
	// Now is the clock for ages, backoff and request signatures.
	Now func() time.Time
	// Rand feeds nonces, signatures and backoff jitter; default crypto/rand.
	Rand io.Reader
	// HTTPClient replaces the client built from RootPEM.
	HTTPClient *http.Client

	// PollInterval is how often the spool is scanned and live recordings
	// are tailed (default 1s: the spool flushes every second).
	PollInterval time.Duration
	// ChunkBytes bounds a chunk (default 1 MiB); chunks end on a line.
	ChunkBytes int
	// MinBackoff and MaxBackoff bound the retry delay after a failure,
	// which doubles per consecutive failure of a recording (with jitter).
	MinBackoff, MaxBackoff time.Duration
	// Workers bounds the recordings shipped at once (default 16).
	Workers int
	// RequestTimeout bounds each request (default 30s).
	RequestTimeout time.Duration
	// OnRecipients, when set, receives the age recipients the playback
	// server asks spools to be sealed to (IngestStored.SpoolRecipients),
	// from each answer to start that names any.
	OnRecipients func(recipients []string)
}

// Check names the first bad field.
func (c *ShipperConfig) Check() error {
	switch {
	case c.Spool == nil:
		return errors.New("recorder: shipper config: Spool is required")
	case c.URL == "":
		return errors.New("recorder: shipper config: URL (the playback server) is required")
	case !strings.HasPrefix(c.URL, "https://") && c.HTTPClient == nil:
		return fmt.Errorf("recorder: shipper config: URL %q must use https", c.URL)
	case slices.ContainsFunc(c.Fallbacks, func(u string) bool { return !strings.HasPrefix(u, "https://") && c.HTTPClient == nil }):
		return errors.New("recorder: shipper config: every fallback URL must use https")
	case c.Cert == nil:
		return errors.New("recorder: shipper config: Cert is required")
	case len(c.RootPEM) == 0 && c.HTTPClient == nil:
		return errors.New("recorder: shipper config: RootPEM (the CA root) is required")
	case c.ChunkBytes < 0 || c.ChunkBytes > maxShipChunk:
		return fmt.Errorf("recorder: shipper config: ChunkBytes %d out of range 0..%d", c.ChunkBytes, maxShipChunk)
	case c.PollInterval < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || c.Workers < 0 || c.RequestTimeout < 0:
		return errors.New("recorder: shipper config: durations and counts must not be negative")
	}
	return nil
}

// Shipper streams the spool's recordings to the playback server: live ones
// while they are recorded (so they can be watched), finished ones to the
// end, then finishes each with its digest and a signature by the host key
// and removes it from the spool. Uploads resume at the offset the server
// holds, so a restart of either side, a network cut or a dropped chunk costs
// a retry, never a byte. Safe for concurrent use.
type Shipper struct {
	cfg ShipperConfig
	hc  *http.Client

	urlMu    sync.Mutex // guards the fields below
	urls     []string   // URL, then Fallbacks
	cur      int        // index of the server in use
	failures int        // consecutive unreachable answers from it

	randMu sync.Mutex // guards cfg.Rand, which need not be safe for concurrent use

	mu      sync.Mutex // guards the fields below
	states  map[string]*shipState
	running int    // workers running
	turns   uint64 // worker turns given so far

	// Owned by Run's goroutine: what was last written to ShipStatusFile.
	savedStatus []byte
	savedAt     time.Time
}

// shipState is what the shipper knows of one recording.
type shipState struct {
	id       string
	start    time.Time
	live     bool
	fileSize int64 // cast size last seen
	started  bool  // /start answered in this process: offset is the server's
	offset   int64 // bytes the server holds
	attempts int   // consecutive failures
	lastErr  string
	nextTry  time.Time
	working  bool   // a worker owns it
	served   uint64 // the shipper's turn count when a worker last took it
	caughtUp int64  // cast size when a turn found no whole line left to send
	// blobOffset is the side blob bytes the server holds (ship_blob.go),
	// from the answer to /start; valid while started.
	blobOffset int64
	blobSize   int64 // side blob size last seen
	// sealed: the cast is sealed (sealed.go); offset is then in plaintext
	// bytes and fileSize, caughtUp in file bytes. sealIdx caches its frames.
	sealed  bool
	sealIdx atrest.Index
	sealAck int64 // file bytes of the frames the server holds (for Status)
}

// NewShipper returns a Shipper; Run starts it.
func NewShipper(cfg ShipperConfig) (*Shipper, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultShipPollInterval
	}
	if cfg.ChunkBytes == 0 {
		cfg.ChunkBytes = DefaultShipChunkBytes
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultShipMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultShipMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.Workers == 0 {
		cfg.Workers = DefaultShipWorkers
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultShipTimeout
	}
	if cfg.FailoverAfter <= 0 {
		cfg.FailoverAfter = 3
	}
	s := &Shipper{cfg: cfg, hc: cfg.HTTPClient, states: map[string]*shipState{}}
	for _, u := range append([]string{cfg.URL}, cfg.Fallbacks...) {
		s.urls = append(s.urls, strings.TrimRight(u, "/"))
	}
	if s.hc == nil {
		tc, err := tlsca.ClientConfigFromPEM(cfg.RootPEM)
		if err != nil {
			return nil, fmt.Errorf("recorder: shipper: %w", err)
		}
		s.hc = &http.Client{Transport: &http.Transport{
			TLSClientConfig:     tc,
			MaxIdleConnsPerHost: cfg.Workers,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		}}
	}
	return s, nil
}

// Run ships until ctx ends, then waits for its workers and returns nil.
// Failures are retried, never returned: they show in Status.
//
// Scheduling: the spool is scanned every PollInterval and whenever a
// recording starts or finishes (Spool.Changed). A worker takes one
// recording for one turn, at most turnChunks chunks, and gives it back, so
// no recording holds a worker while it is live: every live recording
// streams however many there are, and a finished one is shipped within one
// turn of its end whatever else is running. The recordings served longest
// ago go first.
func (s *Shipper) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	freed := make(chan struct{}, 1)
	s.scan(ctx)
	for {
		s.dispatch(ctx, &wg, freed)
		s.saveStatus(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.scan(ctx)
		case <-s.cfg.Spool.Changed():
			s.scan(ctx)
		case <-freed:
		}
	}
}

// turnChunks bounds the chunks one worker sends for a recording before it
// gives the worker back: a busy live session does not starve the others.
const turnChunks = 4

// scan reconciles the states with the spool: new recordings, sizes of the
// cast files, finished flags, recordings gone.
func (s *Shipper) scan(ctx context.Context) {
	entries, err := s.cfg.Spool.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "recorder: shipper cannot list the spool", "err", err)
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if e.Problem != "" {
			continue // shown by the spool's own status; nothing to ship
		}
		seen[e.SessionID] = true
		st := s.states[e.SessionID]
		if st == nil {
			st = &shipState{id: e.SessionID}
			s.states[e.SessionID] = st
		}
		st.start = e.Start
		if !st.working {
			st.live = e.Live
			if fi, err := os.Stat(e.CastPath); err == nil {
				st.fileSize = fi.Size()
			}
			if fi, err := os.Stat(BlobPath(e.CastPath)); err == nil {
				st.blobSize = fi.Size()
			}
		}
	}
	for id, st := range s.states {
		if !seen[id] && !st.working {
			delete(s.states, id)
		}
	}
}

// dueLocked says whether st has work: never asked, bytes not yet
// acknowledged, or finished (its finish is due).
func (st *shipState) dueLocked(now time.Time) bool {
	if st.working || now.Before(st.nextTry) {
		return false
	}
	if st.sealed {
		return !st.started || !st.live || st.fileSize > st.caughtUp
	}
	return !st.started || !st.live || st.fileSize > max(st.offset, st.caughtUp)
}

// dispatch starts a worker turn for each due recording while workers are
// free: the least recently served first, then finished ones, then the
// oldest.
func (s *Shipper) dispatch(ctx context.Context, wg *sync.WaitGroup, freed chan<- struct{}) {
	if ctx.Err() != nil {
		return
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running >= s.cfg.Workers {
		return
	}
	var due []*shipState
	for _, st := range s.states {
		if st.dueLocked(now) {
			due = append(due, st)
		}
	}
	slices.SortFunc(due, func(a, b *shipState) int {
		if c := cmp.Compare(a.served, b.served); c != 0 {
			return c
		}
		if a.live != b.live {
			if a.live {
				return 1
			}
			return -1
		}
		return cmp.Or(a.start.Compare(b.start), cmp.Compare(a.id, b.id))
	})
	for _, st := range due {
		if s.running >= s.cfg.Workers {
			break
		}
		s.turns++
		st.working, st.served = true, s.turns
		s.running++
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work(ctx, st)
			select {
			case freed <- struct{}{}:
			default:
			}
		}()
	}
}

// work gives one recording one turn: it ships up to turnChunks chunks, or
// to the end and finishes it, or schedules a retry after a failure.
func (s *Shipper) work(ctx context.Context, st *shipState) {
	defer func() {
		s.mu.Lock()
		st.working = false
		s.running--
		s.mu.Unlock()
	}()
	_, err := s.step(ctx, st, turnChunks)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.failed(ctx, st, err)
		return
	}
	s.mu.Lock()
	st.attempts, st.lastErr = 0, ""
	s.mu.Unlock()
}

func (s *Shipper) failed(ctx context.Context, st *shipState, err error) {
	s.mu.Lock()
	st.attempts++
	st.lastErr = err.Error()
	delay := s.backoffLocked(st.attempts)
	st.nextTry = s.cfg.Now().Add(delay)
	attempts := st.attempts
	s.mu.Unlock()
	s.cfg.Logger.WarnContext(ctx, "recorder: shipping failed; will retry", "session_id", st.id,
		"attempts", attempts, "retry_in", delay.Round(time.Millisecond), "err", err)
}

// backoffLocked is MinBackoff doubled per failure after the first, capped
// at MaxBackoff, then drawn uniformly from its upper half, so that agents
// that lost the server together do not come back together.
func (s *Shipper) backoffLocked(attempts int) time.Duration {
	d := s.cfg.MinBackoff
	for i := 1; i < attempts && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + time.Duration(s.randUint64()%uint64(half+1))
}

func (s *Shipper) randUint64() uint64 {
	s.randMu.Lock()
	defer s.randMu.Unlock()
	var b [8]byte
	if _, err := io.ReadFull(s.cfg.Rand, b[:]); err != nil {
		return 0
	}
	return binary.BigEndian.Uint64(b[:])
}

// errCorrupted: the server got a chunk that does not match its digest.
var errCorrupted = errors.New("chunk corrupted in transit")

// maxCorruptResends is how often one chunk is sent again at once after the
// server found it corrupted, before backing off.
const maxCorruptResends = 3

// step ships what is there to ship: start, up to maxChunks chunks up to
// the last whole line, and finish once the recording is finished and all
// of it is stored. done means the recording left the spool.
func (s *Shipper) step(ctx context.Context, st *shipState, maxChunks int) (done bool, err error) {
	castPath, metaPath := s.cfg.Spool.castPath(st.id), s.cfg.Spool.metaPath(st.id)
	m, err := readMetadata(metaPath)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil // removed meanwhile
	}
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	started, offset := st.started, st.offset
	st.live = !m.Finished
	s.mu.Unlock()
	if !started {
		var out IngestStored
		if err := s.doJSON(ctx, http.MethodPost, IngestPath(st.id, IngestStart), m, &out); err != nil {
			return false, err
		}
		offset = out.Stored
		s.mu.Lock()
		st.blobOffset = out.BlobStored
		s.mu.Unlock()
		if len(out.SpoolRecipients) > 0 && s.cfg.OnRecipients != nil {
			s.cfg.OnRecipients(out.SpoolRecipients)
		}
		s.setOffset(st, offset, true)
		s.cfg.Logger.DebugContext(ctx, "recorder: shipping recording", "session_id", st.id, "stored", offset)
	}

	f, err := os.Open(castPath)
	if errors.Is(err, fs.ErrNotExist) {
		if _, merr := os.Stat(metaPath); errors.Is(merr, fs.ErrNotExist) {
			return true, nil
		}
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	// The side blob first (ship_blob.go): the cast's markers reference it.
	blobDone, err := s.shipBlob(ctx, st, maxChunks)
	if err != nil {
		return false, err
	}
	sealed, err := atrest.IsEncrypted(f)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	st.sealed = sealed
	s.mu.Unlock()
	if sealed {
		if offset, err = s.shipSealed(ctx, st, f, offset, maxChunks); err != nil {
			return false, err
		}
	}
	corrupt, sent := 0, 0
	for sent < maxChunks && !sealed {
		fi, err := f.Stat()
		if err != nil {
			return false, err
		}
		size := fi.Size()
		s.mu.Lock()
		st.fileSize = size
		s.mu.Unlock()
		if offset >= size {
			s.setCaughtUp(st, size)
			break
		}
		chunk, err := readChunk(f, offset, size, s.cfg.ChunkBytes)
		if err != nil {
			return false, err
		}
		if len(chunk) == 0 {
			s.setCaughtUp(st, size) // a line is still being written
			break
		}
		stored, again, err := s.sendCounted(ctx, st, IngestChunk, offset, chunk, &corrupt)
		if err != nil {
			return false, err
		}
		if again {
			continue
		}
		sent++
		offset = stored
		s.setOffset(st, offset, true)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
	if !m.Finished {
		return false, nil
	}
	// Finished before the chunks were read, so the cast was whole then.
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	castEnd := fi.Size()
	if sealed {
		if _, castEnd, err = sealedDigest(castPath); err != nil {
			return false, err
		}
	}
	if offset < castEnd || !blobDone {
		return false, nil // more to send: next round
	}
	if err := s.finish(ctx, st, m, castPath); err != nil {
		return false, err
	}
	if err := s.cfg.Spool.Remove(ctx, st.id); err != nil && !errors.Is(err, ErrNotFound) {
		return false, fmt.Errorf("recorder: shipped %s but cannot remove it from the spool: %w", st.id, err)
	}
	s.mu.Lock()
	delete(s.states, st.id)
	s.mu.Unlock()
	s.cfg.Logger.InfoContext(ctx, "recorder: recording shipped", "session_id", st.id, "tier", m.Tier, "cast_bytes", fi.Size())
	return true, nil
}

func (s *Shipper) setCaughtUp(st *shipState, size int64) {
	s.mu.Lock()
	st.caughtUp = size
	s.mu.Unlock()
}

func (s *Shipper) setOffset(st *shipState, offset int64, started bool) {
	s.mu.Lock()
	st.offset, st.started = offset, started
	s.mu.Unlock()
}

// sendCounted sends a chunk (sendChunk) of st's recording. again means
// the server found it corrupted in transit and it is to be sent again at
// once (at most maxCorruptResends times in a row, counted in *corrupt); an
// unknown session starts the recording over.
func (s *Shipper) sendCounted(ctx context.Context, st *shipState, action string, offset int64, chunk []byte, corrupt *int) (stored int64, again bool, err error) {
	stored, err = s.sendChunk(ctx, st.id, action, offset, chunk)
	switch {
	case errors.Is(err, errCorrupted) && *corrupt < maxCorruptResends:
		*corrupt++
		s.cfg.Logger.WarnContext(ctx, "recorder: chunk corrupted in transit; sending it again", "session_id", st.id, "action", action, "offset", offset)
		return 0, true, nil
	case errors.Is(err, errUnknownSession):
		s.setOffset(st, 0, false)
		return 0, false, err
	case err != nil:
		return 0, false, err
	}
	*corrupt = 0
	return stored, false, nil
}

// readChunk returns the bytes of f from offset up to the last '\n' within
// limit bytes (or within limit+MaxLineBytes when one line is longer than
// limit), never past size. Nothing is returned while the only line left is
// unfinished.
func readChunk(f io.ReaderAt, offset, size int64, limit int) ([]byte, error) {
	for _, window := range []int64{int64(limit), int64(limit) + MaxLineBytes + 1} {
		n := min(window, size-offset)
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, offset); err != nil && !(errors.Is(err, io.EOF) && len(buf) == 0) {
			return nil, fmt.Errorf("recorder: read cast at %d: %w", offset, err)
		}
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			return buf[:i+1], nil
		}
		if n < window {
			return nil, nil // the last line is still being written
		}
	}
	return nil, fmt.Errorf("recorder: read cast at %d: %w", offset, ErrLineTooLong)
}

// errUnknownSession: the server does not know the session (it lost or
// expired it); ship it again from the start.
var errUnknownSession = errors.New("the playback server does not know this session")

// sendChunk puts a chunk of a recording's cast (action IngestChunk) or of
// its side blob (IngestBlob, ship_blob.go) at offset, answering how much
// the server holds.
func (s *Shipper) sendChunk(ctx context.Context, id, action string, offset int64, chunk []byte) (int64, error) {
	path := IngestPath(id, action) + "?offset=" + strconv.FormatInt(offset, 10)
	status, body, err := s.do(ctx, http.MethodPut, path, chunk, func(h http.Header) {
		h.Set("Content-Type", "application/octet-stream")
		h.Set(ChunkDigestHeader, ChunkDigest(chunk))
	})
	if err != nil {
		return 0, err
	}
	switch status {
	case http.StatusOK, http.StatusConflict:
		// 409: the server holds a different amount; resume from there.
		var out IngestStored
		if err := json.Unmarshal(body, &out); err != nil || out.Stored < 0 {
			what := "a chunk"
			if action == IngestBlob {
				what = "a blob chunk"
			}
			return 0, fmt.Errorf("recorder: ship %s: undecodable answer to %s (%d)", id, what, status)
		}
		return out.Stored, nil
	case http.StatusUnprocessableEntity:
		return 0, errCorrupted
	case http.StatusNotFound:
		return 0, errUnknownSession
	}
	return 0, statusError(action, id, status, body)
}

// finish sends the final metadata with the host's signature. The digest is
// taken from the file, which is what was shipped: if the spool copy changed
// after the recording closed, the metadata says so rather than the upload
// failing for ever.
func (s *Shipper) finish(ctx context.Context, st *shipState, m Metadata, castPath string) error {
	sum, size, err := castDigest(castPath)
	if err != nil {
		return err
	}
	if sum != m.SHA256 || size != m.CastBytes {
		m.Complete = false
		m.Incomplete = strings.TrimPrefix(m.Incomplete+"; spool copy changed after the recording closed", "; ")
		m.SHA256, m.CastBytes = sum, size
	}
	if err := s.checkBlobForFinish(&m); err != nil {
		return err
	}
	_, signer := s.cfg.Cert()
	if signer == nil {
		return errors.New("recorder: no host key to sign the recording with")
	}
	s.randMu.Lock()
	sig, err := SignRecording(signer, s.cfg.Rand, m)
	s.randMu.Unlock()
	if err != nil {
		return err
	}
	body, err := json.Marshal(IngestFinishRequest{Metadata: m, Signature: sig})
	if err != nil {
		return fmt.Errorf("recorder: ship %s: encode finish: %w", m.SessionID, err)
	}
	status, resp, err := s.do(ctx, http.MethodPost, IngestPath(m.SessionID, IngestFinish), body, jsonHeader)
	if err != nil {
		return err
	}
	switch status {
	case http.StatusOK:
		return nil
	case http.StatusUnprocessableEntity:
		// The server's copy does not match: it discarded it; start over.
		s.setOffset(st, 0, false)
	case http.StatusNotFound:
		s.setOffset(st, 0, false)
	}
	return statusError("finish", m.SessionID, status, resp)
}

func jsonHeader(h http.Header) { h.Set("Content-Type", "application/json") }

// doJSON sends in as JSON and decodes a 200 answer into out.
func (s *Shipper) doJSON(ctx context.Context, method, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("recorder: ship: encode %s: %w", path, err)
	}
	status, resp, err := s.do(ctx, method, path, body, jsonHeader)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return statusError(path[strings.LastIndexByte(path, '/')+1:], sessionOfPath(path), status, resp)
	}
	if err := json.Unmarshal(resp, out); err != nil {
		return fmt.Errorf("recorder: ship: decode answer to %s: %w", path, err)
	}
	return nil
}

// do sends one request signed with the host certificate and returns the
// status and (bounded) body.
func (s *Shipper) do(ctx context.Context, method, path string, body []byte, header func(http.Header)) (int, []byte, error) {
	cert, signer := s.cfg.Cert()
	if cert == nil || signer == nil {
		return 0, nil, errors.New("recorder: no host certificate yet")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	base := s.base()
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("recorder: ship: %w", err)
	}
	header(req.Header)
	s.randMu.Lock()
	err = hostauth.Sign(req, body, cert, signer, s.cfg.Now(), s.cfg.Rand)
	s.randMu.Unlock()
	if err != nil {
		return 0, nil, fmt.Errorf("recorder: ship: %w", err)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		s.unreachable(ctx, base)
		return 0, nil, fmt.Errorf("recorder: ship: %s %s: %w", method, req.URL.Path, err)
	}
	if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout {
		s.unreachable(ctx, base)
	} else {
		s.reachable(base)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, nil, fmt.Errorf("recorder: ship: read answer to %s: %w", req.URL.Path, err)
	}
	return resp.StatusCode, data, nil
}

// base is the playback server in use.
func (s *Shipper) base() string {
	s.urlMu.Lock()
	defer s.urlMu.Unlock()
	return s.urls[s.cur]
}

func (s *Shipper) reachable(base string) {
	s.urlMu.Lock()
	if s.urls[s.cur] == base {
		s.failures = 0
	}
	s.urlMu.Unlock()
}

// unreachable counts a failure to reach base; after FailoverAfter in a row
// the shipper moves to the next server, and every recording starts again
// there (at the offset that server holds).
func (s *Shipper) unreachable(ctx context.Context, base string) {
	s.urlMu.Lock()
	if len(s.urls) < 2 || s.urls[s.cur] != base {
		s.urlMu.Unlock()
		return
	}
	s.failures++
	if s.failures < s.cfg.FailoverAfter {
		s.urlMu.Unlock()
		return
	}
	s.failures = 0
	s.cur = (s.cur + 1) % len(s.urls)
	next := s.urls[s.cur]
	s.urlMu.Unlock()
	s.mu.Lock()
	for _, st := range s.states {
		st.started, st.offset, st.caughtUp = false, 0, 0
		st.attempts, st.nextTry = 0, time.Time{}
	}
	s.mu.Unlock()
	s.cfg.Logger.WarnContext(ctx, "recorder: playback server unreachable; shipping to the next one", "from", base, "to", next)
}

// statusError turns an unexpected answer into an error that shows the
// server's one-sentence message.
func statusError(action, id string, status int, body []byte) error {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	msg := http.StatusText(status)
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		msg = e.Message
	}
	return fmt.Errorf("recorder: ship %s: %s refused (%d): %s", id, action, status, msg)
}

func sessionOfPath(path string) string {
	p := strings.TrimPrefix(path, IngestPathPrefix)
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return p
}

// ShipStatus is one recording waiting in the spool, for `sshward-agent
// status`.
type ShipStatus struct {
	SessionID string        `json:"session_id"`
	Start     time.Time     `json:"start"`   // when the session started
	Live      bool          `json:"live"`    // still being recorded
	Shipped   int64         `json:"shipped"` // bytes the playback server acknowledged
	Pending   int64         `json:"pending"` // bytes of the cast and its side blob not yet acknowledged
	Age       time.Duration `json:"age"`     // since the session started
	LastError string        `json:"last_error,omitempty"`
	Attempts  int           `json:"attempts"` // consecutive failed attempts
	NextTry   time.Time     `json:"next_try,omitzero"`
}

// Status lists the recordings not yet shipped, oldest first. Until the
// server has been asked, Shipped is 0 and Pending the whole cast.
func (s *Shipper) Status() []ShipStatus {
	now := s.cfg.Now()
	s.mu.Lock()
	out := make([]ShipStatus, 0, len(s.states))
	for _, st := range s.states {
		ss := ShipStatus{SessionID: st.id, Start: st.start, Live: st.live, Age: now.Sub(st.start), LastError: st.lastErr, Attempts: st.attempts}
		if st.started {
			ss.Shipped = st.offset
		}
		ss.Pending = max(0, st.fileSize-ss.Shipped)
		if st.sealed { // file bytes are frames: count what the server lacks of them
			ss.Pending = max(0, st.fileSize-max(st.sealAck, int64(len(atrest.Magic))))
		}
		if st.started {
			ss.Pending += max(0, st.blobSize-st.blobOffset) // the side blob's (ship_blob.go)
		} else {
			ss.Pending += st.blobSize
		}
		if st.nextTry.After(now) {
			ss.NextTry = st.nextTry
		}
		out = append(out, ss)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b ShipStatus) int {
		return cmp.Or(cmp.Compare(b.Age, a.Age), cmp.Compare(a.SessionID, b.SessionID))
	})
	return out
}

// ShipStatusFile is the file in the spool directory where Run keeps the
// upload queue for other processes: `sshward-agent status` runs beside the
// agent and reads it with ReadShipStatus.
const ShipStatusFile = ".ship-status.json"

// ShipReport is the content of ShipStatusFile.
type ShipReport struct {
	UpdatedAt  time.Time    `json:"updated_at"`
	URL        string       `json:"url"`
	Recordings []ShipStatus `json:"recordings"`
}

// statusRefresh is how often the status file is rewritten when nothing
// but ages changed.
const statusRefresh = 30 * time.Second

// saveStatus rewrites ShipStatusFile when the queue changed (or every
// statusRefresh, so UpdatedAt shows the shipper is alive). It is advisory:
// no fsync, and a failure is only logged.
func (s *Shipper) saveStatus(ctx context.Context) {
	now := s.cfg.Now()
	list := s.Status()
	stable := make([]ShipStatus, len(list))
	for i, st := range list {
		st.Age = 0
		stable[i] = st
	}
	key, _ := json.Marshal(stable)
	if bytes.Equal(key, s.savedStatus) && now.Sub(s.savedAt) < statusRefresh {
		return
	}
	data, err := json.MarshalIndent(ShipReport{UpdatedAt: now.UTC(), URL: s.base(), Recordings: list}, "", "  ")
	if err == nil {
		err = writeFileAtomic(s.cfg.Spool.Dir(), ShipStatusFile, append(data, '\n'))
	}
	if err != nil {
		s.cfg.Logger.WarnContext(ctx, "recorder: cannot write the shipping status", "err", err)
		return
	}
	s.savedStatus, s.savedAt = key, now
}

// writeFileAtomic writes dir/name through a temporary file and a rename.
// The temporary name (".NAME.tmp-…" with NAME ending in .json) is one the
// spool removes at its next start if a crash left it.
func writeFileAtomic(dir, name string, data []byte) error {
	var rnd [6]byte
	if _, err := io.ReadFull(rand.Reader, rnd[:]); err != nil {
		return err
	}
	tmp := filepath.Join(dir, name+".tmp-"+hex.EncodeToString(rnd[:]))
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// ReadShipStatus reads the upload queue a running shipper keeps in the
// spool directory. No file means nothing was ever queued (or no shipper
// ran): an empty report.
func ReadShipStatus(spoolDir string) (*ShipReport, error) {
	data, err := os.ReadFile(filepath.Join(spoolDir, ShipStatusFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &ShipReport{Recordings: []ShipStatus{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recorder: read shipping status: %w", err)
	}
	var r ShipReport
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("recorder: read shipping status: %w", err)
	}
	return &r, nil
}

// shipSealed sends whole frames of a sealed cast (sealed.go) from the
// plaintext offset the server holds, up to the last frame the state file
// vouches for (a frame a crash may still cut is not sent), at most
// maxChunks chunks, and returns the new offset.
func (s *Shipper) shipSealed(ctx context.Context, st *shipState, f *os.File, offset int64, maxChunks int) (int64, error) {
	statePath := sealedStatePath(f.Name())
	corrupt := 0
	for sent := 0; sent < maxChunks; {
		fileEnd := int64(len(atrest.Magic))
		rec, ok, err := lastSealedRecord(statePath)
		if err != nil {
			return offset, err
		}
		if ok {
			fileEnd = rec.FileEnd
		}
		fi, err := f.Stat()
		if err != nil {
			return offset, err
		}
		if fi.Size() < fileEnd {
			return offset, fmt.Errorf("recorder: sealed cast %s is %d bytes, its state file vouches for %d: it was truncated; the rest cannot be shipped", f.Name(), fi.Size(), fileEnd)
		}
		s.mu.Lock()
		st.fileSize = fi.Size()
		idx := &st.sealIdx
		s.mu.Unlock()
		chunk, _, err := readSealedChunk(f, idx, offset, fileEnd, s.cfg.ChunkBytes)
		if err != nil {
			return offset, err
		}
		s.mu.Lock()
		st.sealAck = sealedFileEnd(idx, offset)
		s.mu.Unlock()
		if len(chunk) == 0 {
			s.setCaughtUp(st, fileEnd)
			return offset, nil
		}
		stored, again, err := s.sendCounted(ctx, st, IngestSealed, offset, chunk, &corrupt)
		if err != nil {
			return offset, err
		}
		if again {
			continue
		}
		sent++
		offset = stored
		s.setOffset(st, offset, true)
		if ctx.Err() != nil {
			return offset, ctx.Err()
		}
	}
	return offset, nil
}
