package notify_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/notify"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

// fake is a hand-written Notifier: it records delivered seqs, fails a seq
// as often as failFor says, and blocks (honouring ctx) when block is set.
type fake struct {
	mu       sync.Mutex // guards the fields below
	got      []uint64
	failFor  map[uint64]int
	failAll  bool
	block    bool
	attempts int
	changed  chan struct{} // poked after every attempt
}

func newFake() *fake { return &fake{failFor: map[uint64]int{}, changed: make(chan struct{}, 1)} }

func (f *fake) Notify(ctx context.Context, ev store.AuditEvent) error {
	f.mu.Lock()
	f.attempts++
	block := f.block
	var err error
	switch {
	case f.failAll:
		err = errors.New("receiver down")
	case f.failFor[ev.Seq] > 0:
		f.failFor[ev.Seq]--
		err = fmt.Errorf("receiver answered 503 for %d", ev.Seq)
	case !block:
		f.got = append(f.got, ev.Seq)
	}
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (f *fake) seqs() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

// waitFor waits until cond holds on the fake (checked after each attempt
// and every 20 ms).
func (f *fake) waitFor(t *testing.T, what string, cond func(f *fake) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		f.mu.Lock()
		ok := cond(f)
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-f.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; delivered %v", what, f.seqs())
		}
	}
}

func appendEvents(t *testing.T, db *store.DB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := db.Update(t.Context(), func(tx *store.Tx) error {
			return tx.AppendAudit(&store.AuditEvent{Type: "login", Actor: fmt.Sprintf("user%d", i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// start runs a dispatcher until the test ends (or stop is called) and
// fails the test if Run does not return promptly.
func start(t *testing.T, cfg notify.Config) (d *notify.Dispatcher, stop func()) {
	t.Helper()
	if cfg.Poll == 0 {
		cfg.Poll = 10 * time.Millisecond
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 5*time.Millisecond
	}
	d, err := notify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after its ctx ended")
			}
		})
	}
	t.Cleanup(stop)
	return d, stop
}

func cursor(t *testing.T, db *store.DB, name string) uint64 {
	t.Helper()
	c, err := notify.Cursor(t.Context(), db, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitCursor waits for the saved cursor to reach want (saves follow
// deliveries by a transaction).
func waitCursor(t *testing.T, db *store.DB, name string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := cursor(t, db, name)
		if c == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor %s = %d, want %d", name, c, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeliversEveryEventInOrder(t *testing.T) {
	db := storetest.MustOpen(t)
	appendEvents(t, db, 250) // three batches of 100
	f := newFake()
	_, stop := start(t, notify.Config{Store: db, Targets: []notify.Target{{Name: "hook", Notifier: f}}})
	f.waitFor(t, "250 events", func(f *fake) bool { return len(f.got) >= 250 })
	appendEvents(t, db, 5) // and what comes later
	f.waitFor(t, "255 events", func(f *fake) bool { return len(f.got) >= 255 })
	stop()
	if got := f.seqs(); !slices.Equal(got, seqRange(1, 255)) {
		t.Fatalf("delivered %v, want 1…255 once each in order", got)
	}
	if c := cursor(t, db, "hook"); c != 255 {
		t.Errorf("cursor = %d, want 255", c)
	}
}

func TestResumesFromCursorAfterRestart(t *testing.T) {
	db := storetest.MustOpen(t)
	appendEvents(t, db, 3)
	first := newFake()
	_, stop := start(t, notify.Config{Store: db, Targets: []notify.Target{{Name: "hook", Notifier: first}}})
	first.waitFor(t, "3 events", func(f *fake) bool { return len(f.got) == 3 })
	stop()

	appendEvents(t, db, 3) // while the CA is "down"
	again, newcomer := newFake(), newFake()
	start(t, notify.Config{Store: db, Targets: []notify.Target{{Name: "hook", Notifier: again}, {Name: "new", Notifier: newcomer}}})
	again.waitFor(t, "events 4-6", func(f *fake) bool { return len(f.got) == 3 })
	newcomer.waitFor(t, "events 1-6", func(f *fake) bool { return len(f.got) == 6 })
	if got := again.seqs(); !slices.Equal(got, seqRange(4, 6)) {
		t.Errorf("after restart delivered %v, want 4 5 6", got)
	}
	if got := newcomer.seqs(); !slices.Equal(got, seqRange(1, 6)) {
		t.Errorf("a notifier without a cursor got %v, want the whole log", got)
	}
}

func TestFailuresRetryAndAreAuditedOncePerStreak(t *testing.T) {
	db := storetest.MustOpen(t)
	appendEvents(t, db, 2)
	f := newFake()
	f.failFor[1] = 4 // one streak of 4 failures: one record at the 3rd
	f.failFor[2] = 3 // after a success, a second streak: a second record
	start(t, notify.Config{Store: db, FailureThreshold: 3, Targets: []notify.Target{{Name: "hook", Notifier: f}}})
	// 1, 2, then the two notify.failure events the streaks appended.
	f.waitFor(t, "4 events", func(f *fake) bool { return len(f.got) >= 4 })
	if got := f.seqs(); !slices.Equal(got, seqRange(1, 4)) {
		t.Fatalf("delivered %v, want 1 2 3 4", got)
	}
	evs, err := db.Audit(t.Context(), store.AuditFilter{Type: notify.FailureEvent})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("%d %s events, want 2 (one per streak): %+v", len(evs), notify.FailureEvent, evs)
	}
	for i, want := range []struct{ seq, failures string }{{"1", "3"}, {"2", "3"}} {
		ev := evs[i]
		if ev.Subject != "hook" || ev.Details["notifier"] != "hook" || ev.Details["seq"] != want.seq ||
			ev.Details["failures"] != want.failures || ev.Details["event_type"] != "login" || !strings.Contains(ev.Reason, "503") {
			t.Errorf("failure event %d = %+v, want seq %s after %s failures", i, ev, want.seq, want.failures)
		}
	}
	if rep, err := db.VerifyAudit(t.Context()); err != nil || rep.Records != 4 {
		t.Errorf("audit chain: %+v, %v", rep, err)
	}
}

func TestDeadNotifierBlocksNothingElse(t *testing.T) {
	db := storetest.MustOpen(t)
	appendEvents(t, db, 3)
	dead, slow, ok := newFake(), newFake(), newFake()
	dead.failAll = true
	slow.block = true
	start(t, notify.Config{Store: db, FailureThreshold: 2, Targets: []notify.Target{
		{Name: "dead", Notifier: dead}, {Name: "slow", Notifier: slow}, {Name: "ok", Notifier: ok}}})
	// Appending (what issuance does) is not held up by either.
	appendEvents(t, db, 3)
	// 6 events + the dead notifier's failure record.
	ok.waitFor(t, "7 events", func(f *fake) bool { return len(f.got) == 7 })
	waitCursor(t, db, "ok", 7)
	if c := cursor(t, db, "dead"); c != 0 {
		t.Errorf("dead notifier's cursor moved to %d", c)
	}
	evs, err := db.Audit(t.Context(), store.AuditFilter{Type: notify.FailureEvent})
	if err != nil || len(evs) != 1 || evs[0].Subject != "dead" {
		t.Errorf("failure events = %+v, %v; want one for dead", evs, err)
	}
}

func TestCursorSavedWhileRetrying(t *testing.T) {
	db := storetest.MustOpen(t)
	appendEvents(t, db, 3)
	f := newFake()
	f.failFor[3] = 1 << 30
	start(t, notify.Config{Store: db, FailureThreshold: 1 << 30, Targets: []notify.Target{{Name: "hook", Notifier: f}}})
	f.waitFor(t, "retries of 3", func(f *fake) bool { return len(f.got) == 2 && f.attempts > 4 })
	// A CA crash now would deliver only 3 again, not 1 and 2.
	waitCursor(t, db, "hook", 2)
}

func TestNudgeWakesIdleNotifier(t *testing.T) {
	db := storetest.MustOpen(t)
	f := newFake()
	d, _ := start(t, notify.Config{Store: db, Poll: time.Hour, Targets: []notify.Target{{Name: "hook", Notifier: f}}})
	time.Sleep(50 * time.Millisecond) // let it find the log empty and go idle
	appendEvents(t, db, 1)
	d.Notify()
	f.waitFor(t, "the nudged event", func(f *fake) bool { return len(f.got) == 1 })
}

func TestRunEndsWithBlockedNotifierAndSavesCursor(t *testing.T) {
	db := storetest.MustOpen(t)
	appendEvents(t, db, 2)
	f := newFake()
	f.failFor[2] = 1 << 30
	_, stop := start(t, notify.Config{Store: db, MinBackoff: time.Hour, MaxBackoff: time.Hour, Targets: []notify.Target{{Name: "hook", Notifier: f}}})
	f.waitFor(t, "the failure of 2", func(f *fake) bool { return f.attempts >= 2 })
	stop() // waits for Run: it must not sit out the hour
	if c := cursor(t, db, "hook"); c != 1 {
		t.Errorf("cursor = %d, want 1", c)
	}

	g := newFake()
	g.block = true
	_, stop = start(t, notify.Config{Store: db, Targets: []notify.Target{{Name: "blocked", Notifier: g}}})
	g.waitFor(t, "a blocked attempt", func(f *fake) bool { return f.attempts >= 1 })
	stop()
}

func TestConfigCheck(t *testing.T) {
	db := storetest.MustOpen(t)
	n := newFake()
	tests := []struct {
		name string
		cfg  notify.Config
		want string
	}{
		{"no store", notify.Config{}, "Store"},
		{"empty name", notify.Config{Store: db, Targets: []notify.Target{{Notifier: n}}}, "Name is empty"},
		{"duplicate", notify.Config{Store: db, Targets: []notify.Target{{Name: "a", Notifier: n}, {Name: "a", Notifier: n}}}, "used twice"},
		{"nil notifier", notify.Config{Store: db, Targets: []notify.Target{{Name: "a"}}}, "Notifier is nil"},
		{"negative", notify.Config{Store: db, Poll: -1}, "negative"},
		{"ok", notify.Config{Store: db, Targets: []notify.Target{{Name: "a", Notifier: n}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := notify.New(tt.cfg)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("New: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestRunTwiceRefusedAndNoTargets(t *testing.T) {
	db := storetest.MustOpen(t)
	d, err := notify.New(notify.Config{Store: db})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(t.Context()); err != nil {
		t.Fatalf("Run without targets: %v", err)
	}
	if err := d.Run(t.Context()); err == nil {
		t.Fatal("second Run accepted")
	}
}

func TestCursorUnreadable(t *testing.T) {
	db := storetest.MustOpen(t)
	if err := db.Update(t.Context(), func(tx *store.Tx) error { return tx.PutMeta(notify.CursorKey("hook"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := notify.Cursor(t.Context(), db, "hook"); err == nil || !strings.Contains(err.Error(), "not a sequence number") {
		t.Fatalf("Cursor of garbage: %v", err)
	}
}

// A fixed Rand makes the jitter draw reproducible.
func TestBackoffWithJitterStaysInBounds(t *testing.T) {
	db := storetest.MustOpen(t)
	for _, tt := range []struct {
		name string
		rand []byte
	}{{"low draw", bytes.Repeat([]byte{0}, 8*64)}, {"high draw", bytes.Repeat([]byte{0xff}, 8*64)}} {
		t.Run(tt.name, func(t *testing.T) {
			appendEvents(t, db, 1)
			f := newFake()
			f.failAll = true
			start(t, notify.Config{Store: db, Rand: bytes.NewReader(tt.rand), MinBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
				FailureThreshold: 1 << 30, Targets: []notify.Target{{Name: "j" + tt.name[:1], Notifier: f}}})
			begin := time.Now()
			f.waitFor(t, "5 attempts", func(f *fake) bool { return f.attempts >= 5 })
			// 4 waits of 10-20, 20-40, 20-40, 20-40 ms.
			if d := time.Since(begin); d < 70*time.Millisecond || d > 3*time.Second {
				t.Errorf("5 attempts took %s, want within [70ms, 3s]", d)
			}
		})
	}
}
