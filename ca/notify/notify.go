package notify

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sshward/sshward/ca/store"
)

// Notifier is what the dispatcher needs of a notifier: the plugin client
// (plugins.Client) in the CA, a fake in tests. An error means "not
// delivered"; the same event is offered again later.
type Notifier interface {
	Notify(ctx context.Context, ev store.AuditEvent) error
}

// Target is one notifier and the name its cursor is kept under.
type Target struct {
	Name     string // unique; part of the meta key, so keep it stable across restarts
	Notifier Notifier
}

// FailureEvent is the audit event type written after FailureThreshold
// consecutive failed deliveries to one notifier.
const FailureEvent = "notify.failure"

// CursorKey is the store meta key holding a notifier's cursor: the decimal
// Seq of the last event delivered to it.
func CursorKey(name string) string { return "notify.cursor." + name }

// Defaults for Config's zero values.
const (
	DefaultPoll             = 500 * time.Millisecond
	DefaultBatch            = 100
	DefaultAttemptTimeout   = 30 * time.Second
	DefaultMinBackoff       = 500 * time.Millisecond
	DefaultMaxBackoff       = time.Minute
	DefaultFailureThreshold = 5
)

// Config configures a Dispatcher.
type Config struct {
	// Store holds the audit log and the cursors. Required.
	Store *store.DB
	// Targets are the notifiers; names must be unique.
	Targets []Target
	// Poll is how often an idle notifier looks for new events when not
	// nudged with Notify. Default DefaultPoll.
	Poll time.Duration
	// Batch is how many events are read from the log at once; the cursor
	// is saved after each batch. Default DefaultBatch.
	Batch int
	// AttemptTimeout bounds one delivery attempt. Default
	// DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts: it doubles
	// per consecutive failure, with jitter (between half and all of it).
	// Defaults DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// FailureThreshold is the number of consecutive failures after which a
	// FailureEvent is appended to the audit log. Default
	// DefaultFailureThreshold.
	FailureThreshold int
	// Rand is the jitter source. Default crypto/rand.Reader.
	Rand io.Reader
	// Logger gets one warning per failed attempt. Default: discard.
	Logger *slog.Logger
}

// Check reports the first invalid field.
func (c *Config) Check() error {
	if c.Store == nil {
		return errors.New("notify: config: Store is required")
	}
	seen := map[string]bool{}
	for i, t := range c.Targets {
		switch {
		case t.Name == "":
			return fmt.Errorf("notify: config: Targets[%d]: Name is empty", i)
		case len(t.Name) > 256:
			return fmt.Errorf("notify: config: Targets[%d]: Name longer than 256 bytes", i)
		case seen[t.Name]:
			return fmt.Errorf("notify: config: Targets[%d]: Name %q used twice", i, t.Name)
		case t.Notifier == nil:
			return fmt.Errorf("notify: config: Targets[%d] (%s): Notifier is nil", i, t.Name)
		}
		seen[t.Name] = true
	}
	if c.Poll < 0 || c.Batch < 0 || c.AttemptTimeout < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || c.FailureThreshold < 0 {
		return errors.New("notify: config: Poll, Batch, AttemptTimeout, MinBackoff, MaxBackoff and FailureThreshold must not be negative")
	}
	return nil
}

// Dispatcher tails the audit log into the notifiers, one goroutine per
// notifier (see the package doc).
type Dispatcher struct {
	cfg    Config
	nudges []chan struct{} // one per target, capacity 1

	mu      sync.Mutex // guards running
	running bool
	randMu  sync.Mutex // guards cfg.Rand, which need not be safe for concurrent use
}

// New checks cfg and returns a Dispatcher; Run starts it.
func New(cfg Config) (*Dispatcher, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg.Targets = append([]Target(nil), cfg.Targets...)
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.FailureThreshold == 0 {
		cfg.FailureThreshold = DefaultFailureThreshold
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{cfg: cfg}
	for range cfg.Targets {
		d.nudges = append(d.nudges, make(chan struct{}, 1))
	}
	return d, nil
}

// Run delivers until ctx ends, then saves every cursor and returns nil.
// It returns at once when there are no targets. It may run only once.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.running {
		d.mu.Unlock()
		return errors.New("notify: run: already running")
	}
	d.running = true
	d.mu.Unlock()
	var wg sync.WaitGroup
	for i, t := range d.cfg.Targets {
		wg.Go(func() { d.deliverAll(ctx, t, d.nudges[i]) })
	}
	wg.Wait()
	return nil
}

// Notify wakes every idle notifier to look for new events now instead of
// at the next poll. It never blocks.
func (d *Dispatcher) Notify() {
	for _, ch := range d.nudges {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Cursor returns the Seq of the last event delivered to the named
// notifier, 0 when none was.
func Cursor(ctx context.Context, db *store.DB, name string) (uint64, error) {
	var seq uint64
	err := db.View(ctx, func(tx *store.Tx) error {
		v, err := tx.GetMeta(CursorKey(name))
		if errors.Is(err, store.ErrNotFound) {
			seq = 0
			return nil
		}
		if err != nil {
			return err
		}
		seq, err = strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return fmt.Errorf("notify: cursor %s: %q is not a sequence number: %w", name, v, err)
		}
		return nil
	})
	return seq, err
}

// deliverAll is one notifier's loop: read a batch after the cursor, deliver
// each event until it succeeds, save the cursor, repeat.
func (d *Dispatcher) deliverAll(ctx context.Context, t Target, nudge <-chan struct{}) {
	log := d.cfg.Logger.With("notifier", t.Name)
	var cursor uint64
	for attempt := 1; ; attempt++ {
		var err error
		if cursor, err = Cursor(ctx, d.cfg.Store, t.Name); err == nil {
			break
		}
		log.Error("notifier cursor unreadable; retrying", "err", err)
		if !d.sleep(ctx, d.backoff(attempt)) {
			return
		}
	}
	saved := cursor
	save := func() {
		if cursor == saved {
			return
		}
		// On the way out ctx is done; the cursor still deserves its write.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := d.cfg.Store.Update(sctx, func(tx *store.Tx) error {
			return advanceCursor(tx, t.Name, cursor)
		}); err != nil {
			log.Error("notifier cursor not saved; events may be delivered again", "seq", cursor, "err", err)
			return
		}
		saved = cursor
	}
	defer save()

	failures := 0 // consecutive failed attempts (any event)
	var own *owner
	if d.cfg.Store.Shared() {
		own = newOwner() // CA replicas: one of them delivers (owner.go)
	}
	for ctx.Err() == nil {
		if own != nil {
			may, fresh, err := own.hold(ctx, d.cfg.Store, t.Name)
			if err == nil && fresh {
				if cursor, err = Cursor(ctx, d.cfg.Store, t.Name); err != nil {
					own.held = false // read it again next time
				}
				saved = cursor
			}
			if err != nil || !may {
				if err != nil && ctx.Err() == nil {
					log.Error("notifier ownership unknown; retrying", "err", err)
				}
				if !d.sleep(ctx, d.cfg.Poll) {
					return
				}
				continue
			}
		}
		evs, err := d.cfg.Store.Audit(ctx, store.AuditFilter{AfterSeq: cursor, Limit: d.cfg.Batch})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			log.Error("audit log unreadable", "err", err)
			if !d.sleep(ctx, d.backoff(failures)) {
				return
			}
			continue
		}
		if len(evs) == 0 {
			failures = 0
			select {
			case <-ctx.Done():
				return
			case <-nudge:
			case <-time.After(d.cfg.Poll):
			}
			continue
		}
		for _, ev := range evs {
			for {
				err := d.attempt(ctx, t.Notifier, ev)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return
				}
				failures++
				log.Warn("notification not delivered; will retry", "seq", ev.Seq, "type", ev.Type, "failures", failures, "err", err)
				if failures == d.cfg.FailureThreshold {
					d.recordFailure(ctx, t.Name, ev, failures, err)
				}
				save() // keep what was delivered before waiting
				if !d.sleep(ctx, d.backoff(failures)) {
					return
				}
			}
			failures = 0
			cursor = ev.Seq
		}
		save()
	}
}

func (d *Dispatcher) attempt(ctx context.Context, n Notifier, ev store.AuditEvent) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	return n.Notify(ctx, ev)
}

// recordFailure appends the one FailureEvent of a failure streak. The
// error text comes from the notifier, which must keep secrets (a webhook
// URL's token) out of it; it is cut short all the same.
func (d *Dispatcher) recordFailure(ctx context.Context, name string, ev store.AuditEvent, failures int, cause error) {
	reason := cause.Error()
	if len(reason) > 300 {
		reason = strings.ToValidUTF8(reason[:300], "") + "…"
	}
	err := d.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		return tx.AppendAudit(&store.AuditEvent{
			Type: FailureEvent, Subject: name, Reason: reason,
			Details: map[string]string{
				"notifier":   name,
				"seq":        strconv.FormatUint(ev.Seq, 10),
				"event_type": ev.Type,
				"failures":   strconv.Itoa(failures),
			},
		})
	})
	if err != nil {
		d.cfg.Logger.Error("notify.failure not recorded in the audit log", "notifier", name, "err", err)
	}
}

// backoff is the wait after the n-th consecutive failure: MinBackoff
// doubling up to MaxBackoff, then drawn between half of it and all of it
// so that notifiers failing together do not retry in lockstep.
func (d *Dispatcher) backoff(n int) time.Duration {
	b := d.cfg.MinBackoff
	for i := 1; i < n && b < d.cfg.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.cfg.MaxBackoff)
	half := b / 2
	if half <= 0 {
		return b
	}
	var buf [8]byte
	d.randMu.Lock()
	_, err := io.ReadFull(d.cfg.Rand, buf[:])
	d.randMu.Unlock()
	if err != nil {
		return b
	}
	return half + time.Duration(binary.BigEndian.Uint64(buf[:])%uint64(half+1))
}

// sleep waits d or until ctx ends; false means ctx ended.
func (d *Dispatcher) sleep(ctx context.Context, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
