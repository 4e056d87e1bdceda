package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/notify"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
	"github.com/sshward/sshward/plugins"
	"github.com/sshward/sshward/plugins/plugintest"
	"github.com/sshward/sshward/plugins/webhook"
)

// pluginBin is the real sshward-plugin-webhook, built once by TestMain.
var pluginBin plugintest.Binary

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sshward-webhook-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	pluginBin, err = plugintest.Build(ctx, dir, "github.com/sshward/sshward/plugins/webhook/cmd/sshward-plugin-webhook")
	cancel()
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// seqReceiver verifies every request with its secret and records the seq
// of each, in arrival order. hold, when set, is called for each request
// before it is answered.
type seqReceiver struct {
	*httptest.Server
	secret []byte
	hold   func(seq uint64, r *http.Request)

	mu  sync.Mutex // guards the fields below
	raw []uint64   // every verified request, duplicates included
	bad int        // requests that failed verification
}

func newSeqReceiver(t *testing.T, secret []byte, hold func(uint64, *http.Request)) *seqReceiver {
	r := &seqReceiver{secret: secret, hold: hold}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := webhook.Verify(r.secret, req.Header, body, time.Now(), time.Minute); err != nil {
			r.mu.Lock()
			r.bad++
			r.mu.Unlock()
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		ev, err := plugins.DecodeEvent(body)
		if err != nil || strconv.FormatUint(ev.Seq, 10) != req.Header.Get(webhook.HeaderSeq) {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		// Recorded on arrival: a receiver that got the event but whose
		// answer was lost has still got it (at least once).
		r.mu.Lock()
		r.raw = append(r.raw, ev.Seq)
		r.mu.Unlock()
		if r.hold != nil {
			r.hold(ev.Seq, req)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

// deduped is what a receiver keeping the last seq it processed sees:
// the first arrival of each seq.
func (r *seqReceiver) deduped() (raw, first []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	raw = slices.Clone(r.raw)
	var last uint64
	for _, s := range raw {
		if s > last {
			first = append(first, s)
			last = s
		}
	}
	return raw, first
}

func writeSecret(t *testing.T, secret []byte) string {
	p := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(p, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func loadPlugin(t *testing.T, url, secretFile string) *plugins.Client {
	t.Helper()
	c, err := plugins.Load(t.Context(), plugins.Config{
		Name: "webhook", Kind: plugins.KindNotifier, Path: pluginBin.Path, SHA256: pluginBin.SHA256,
		Args: []string{"--url", url, "--secret-file", secretFile, "--timeout", "5s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if pids := plugintest.Children(t, pluginBin.Path); len(pids) != 0 {
			t.Errorf("plugin processes left: %v", pids)
		}
	})
	return c
}

func appendLogins(t *testing.T, db *store.DB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := db.Update(t.Context(), func(tx *store.Tx) error {
			return tx.AppendAudit(&store.AuditEvent{Type: "login", Actor: "alice"})
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// The notifier killed mid-delivery: every event reaches the receiver, in
// order, after the plugin restarts; the receiver dedupes the one delivered
// twice by seq (the documented at-least-once contract).
func TestPluginKilledMidDeliveryLosesNothing(t *testing.T) {
	db := storetest.MustOpen(t)
	appendLogins(t, db, 5)

	holding := make(chan struct{})
	var once sync.Once
	r := newSeqReceiver(t, secret, func(seq uint64, req *http.Request) {
		if seq != 3 {
			return
		}
		held := false
		once.Do(func() { held = true })
		if held { // the first arrival of 3 never gets an answer
			close(holding)
			<-req.Context().Done()
		}
	})
	client := loadPlugin(t, r.URL+"/hook", writeSecret(t, secret))
	d, err := notify.New(notify.Config{Store: db, Poll: 20 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Targets: []notify.Target{{Name: "webhook", Notifier: client}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	select {
	case <-holding:
	case <-time.After(10 * time.Second):
		t.Fatal("event 3 never reached the receiver")
	}
	pids := plugintest.WaitChildren(t, pluginBin.Path, 1, 5*time.Second)
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	appendLogins(t, db, 5) // events while the notifier is down

	var want []uint64
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, err := db.Audit(t.Context(), store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		want = want[:0]
		for _, ev := range evs {
			want = append(want, ev.Seq)
		}
		if _, first := r.deduped(); slices.Equal(first, want) {
			break
		}
		if time.Now().After(deadline) {
			raw, first := r.deduped()
			t.Fatalf("receiver got %v (raw %v), want %v", first, raw, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	raw, _ := r.deduped()
	if !slices.IsSorted(raw) {
		t.Errorf("arrivals out of order: %v", raw)
	}
	if n := len(raw) - len(want); n < 1 || n > 2 {
		t.Errorf("arrivals %v: %d duplicates, want the held event again (1, or 2 if its retry also raced the kill)", raw, n)
	}
	if r.bad != 0 {
		t.Errorf("%d requests failed verification", r.bad)
	}
	if now := plugintest.Children(t, pluginBin.Path); len(now) != 1 || now[0] == pids[0] {
		t.Errorf("plugin processes %v, want one restarted (killed %d)", now, pids[0])
	}
	if c, err := notify.Cursor(t.Context(), db, "webhook"); err != nil || c != want[len(want)-1] {
		t.Errorf("cursor = %d, %v; want %d", c, err, want[len(want)-1])
	}
}

func TestPluginSignsWithConfiguredSecret(t *testing.T) {
	tests := []struct {
		name       string
		receiverIs []byte
		wantErr    bool
	}{
		{"same secret", secret, false},
		{"receiver holds another secret: a bad signature is detected", []byte("some-other-secret-entirely"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newSeqReceiver(t, tt.receiverIs, nil)
			client := loadPlugin(t, r.URL, writeSecret(t, secret))
			err := client.Notify(t.Context(), store.AuditEvent{Seq: 1, Type: "login", Outcome: "ok"})
			if tt.wantErr {
				if err == nil || r.bad != 1 {
					t.Fatalf("Notify = %v with %d rejected requests; want the 401 reported, one attempt", err, r.bad)
				}
				return
			}
			if raw, _ := r.deduped(); err != nil || !slices.Equal(raw, []uint64{1}) {
				t.Fatalf("Notify = %v, receiver got %v", err, raw)
			}
		})
	}
}

func TestPluginRefusesBadConfig(t *testing.T) {
	_, err := plugins.Load(t.Context(), plugins.Config{
		Name: "webhook", Kind: plugins.KindNotifier, Path: pluginBin.Path, SHA256: pluginBin.SHA256,
		Args: []string{"--url", "https://hooks.example.com/x"}, StartTimeout: 5 * time.Second,
	})
	if err == nil || !strings.Contains(err.Error(), "--secret-file") {
		t.Fatalf("Load = %v, want the plugin's own complaint about --secret-file", err)
	}
}
