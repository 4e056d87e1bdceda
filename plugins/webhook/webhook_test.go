package webhook_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/plugins"
	"github.com/sshward/sshward/plugins/webhook"
)

var (
	secret = []byte("0123456789abcdef-test-secret")
	t0     = time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	event  = store.AuditEvent{Seq: 42, Time: t0, Type: "cert.issue", Actor: "alice", Tier: "production", Serial: 7,
		Outcome: "ok", Details: map[string]string{"principals": "root"}, PrevHash: "aa", Hash: "bb"}
)

// delivery is one request a receiver saw.
type delivery struct {
	header http.Header
	body   []byte
	status int
}

// receiver is an httptest server answering with statuses in turn (200
// once they run out) and recording every request.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex // guards the fields below
	statuses []int
	got      []delivery
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
		}
		r.got = append(r.got, delivery{header: req.Header.Clone(), body: body, status: status})
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

func newNotifier(t *testing.T, url string, mod func(*webhook.Config)) *webhook.Notifier {
	t.Helper()
	cfg := webhook.Config{URL: url, Secret: secret, Now: func() time.Time { return t0 }, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	n, err := webhook.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDeliversSignedEvent(t *testing.T) {
	r := newReceiver(t)
	if err := newNotifier(t, r.URL+"/hook", nil).Notify(t.Context(), event); err != nil {
		t.Fatal(err)
	}
	got := r.deliveries()
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	d := got[0]
	if err := webhook.Verify(secret, d.header, d.body, t0.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("receiver could not verify: %v", err)
	}
	for k, want := range map[string]string{
		"Content-Type": "application/json", webhook.HeaderEvent: "cert.issue", webhook.HeaderSeq: "42",
		webhook.HeaderTimestamp: strconv.FormatInt(t0.Unix(), 10),
	} {
		if v := d.header.Get(k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	ev, err := plugins.DecodeEvent(d.body)
	if err != nil || !reflect.DeepEqual(ev, event) {
		t.Errorf("body = %s (%v), want the event", d.body, err)
	}
}

// The signature is HMAC-SHA256 as any tool computes it: openssl agrees.
func TestSignatureMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is missing: apt-get install openssl")
	}
	body := []byte(`{"seq":1,"type":"login"}`)
	cmd := exec.Command("openssl", "dgst", "-sha256", "-hmac", string(secret), "-r")
	cmd.Stdin = bytes.NewReader(append([]byte("1700000000."), body...))
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "sha256=" + strings.Fields(string(out))[0]
	if got := webhook.Sign(secret, "1700000000", body); got != want {
		t.Fatalf("Sign = %s, openssl says %s", got, want)
	}
}

func TestRetriesThenDeliversOnce(t *testing.T) {
	r := newReceiver(t, 500, 503)
	if err := newNotifier(t, r.URL, nil).Notify(t.Context(), event); err != nil {
		t.Fatalf("Notify after two failures: %v", err)
	}
	got := r.deliveries()
	accepted := 0
	for _, d := range got {
		if err := webhook.Verify(secret, d.header, d.body, t0, time.Minute); err != nil {
			t.Errorf("attempt not verifiable: %v", err)
		}
		if d.status == http.StatusOK {
			accepted++
		}
	}
	if len(got) != 3 || accepted != 1 {
		t.Fatalf("%d attempts, %d accepted; want 3 attempts, the event accepted exactly once", len(got), accepted)
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name         string
		statuses     []int
		wantAttempts int
		want         string
	}{
		{name: "gives up after the attempts", statuses: []int{503, 503, 503, 503}, wantAttempts: 3, want: "503"},
		{name: "429 is retried", statuses: []int{429, 429, 429}, wantAttempts: 3, want: "429"},
		{name: "4xx is not retried", statuses: []int{400}, wantAttempts: 1, want: "not retried"},
		{name: "a wrong secret is refused by the receiver", statuses: []int{401}, wantAttempts: 1, want: "401"},
		{name: "redirects are not followed", statuses: []int{307}, wantAttempts: 1, want: "307"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(t, tt.statuses...)
			err := newNotifier(t, r.URL+"/services/T0/B0/sekrit-token", nil).Notify(t.Context(), event)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "sekrit-token") {
				t.Errorf("the error reveals the URL path: %v", err)
			}
			if n := len(r.deliveries()); n != tt.wantAttempts {
				t.Errorf("%d attempts, want %d", n, tt.wantAttempts)
			}
		})
	}
}

func TestNetworkErrorHidesURL(t *testing.T) {
	r := newReceiver(t)
	url := r.URL + "/services/sekrit-token"
	r.Close()
	err := newNotifier(t, url, nil).Notify(t.Context(), event)
	if err == nil || strings.Contains(err.Error(), "sekrit-token") || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("err = %v, want a network error naming the host only", err)
	}
}

func TestContextCancelsDelivery(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := newNotifier(t, srv.URL, nil).Notify(ctx, event)
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("Notify = %v after %s, want a prompt error", err, time.Since(start))
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	body := []byte(`{"seq":1,"type":"login"}`)
	ts := strconv.FormatInt(t0.Unix(), 10)
	good := func() http.Header {
		h := http.Header{}
		h.Set(webhook.HeaderTimestamp, ts)
		h.Set(webhook.HeaderSignature, webhook.Sign(secret, ts, body))
		return h
	}
	tests := []struct {
		name   string
		secret []byte
		header func(http.Header)
		body   []byte
		now    time.Time
		want   error
	}{
		{name: "valid", want: nil},
		{name: "wrong secret", secret: []byte("another-secret-of-16+"), want: webhook.ErrBadSignature},
		{name: "tampered body", body: []byte(`{"seq":1,"type":"logout"}`), want: webhook.ErrBadSignature},
		{name: "tampered timestamp", header: func(h http.Header) { h.Set(webhook.HeaderTimestamp, strconv.FormatInt(t0.Unix()+1, 10)) }, want: webhook.ErrBadSignature},
		{name: "replayed later", now: t0.Add(10 * time.Minute), want: webhook.ErrStale},
		{name: "from the future", now: t0.Add(-10 * time.Minute), want: webhook.ErrStale},
		{name: "no signature", header: func(h http.Header) { h.Del(webhook.HeaderSignature) }, want: webhook.ErrBadSignature},
		{name: "other algorithm", header: func(h http.Header) {
			h.Set(webhook.HeaderSignature, strings.Replace(h.Get(webhook.HeaderSignature), "sha256=", "sha1=", 1))
		}, want: webhook.ErrBadSignature},
		{name: "not hex", header: func(h http.Header) { h.Set(webhook.HeaderSignature, "sha256=zz") }, want: webhook.ErrBadSignature},
		{name: "truncated", header: func(h http.Header) { h.Set(webhook.HeaderSignature, h.Get(webhook.HeaderSignature)[:20]) }, want: webhook.ErrBadSignature},
		{name: "no timestamp", header: func(h http.Header) { h.Del(webhook.HeaderTimestamp) }, want: webhook.ErrStale},
		{name: "padded timestamp", header: func(h http.Header) { h.Set(webhook.HeaderTimestamp, "0"+ts) }, want: webhook.ErrStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := good()
			if tt.header != nil {
				tt.header(h)
			}
			s, b, now := secret, body, t0
			if tt.secret != nil {
				s = tt.secret
			}
			if tt.body != nil {
				b = tt.body
			}
			if !tt.now.IsZero() {
				now = tt.now
			}
			if err := webhook.Verify(s, h, b, now, 5*time.Minute); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("1700000000", "sha256=00", []byte(`{}`))
	f.Add("1700000000", webhook.Sign(secret, "1700000000", []byte(`{}`)), []byte(`{}`))
	f.Add("-1", "sha256=", []byte(nil))
	f.Fuzz(func(t *testing.T, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(webhook.HeaderTimestamp, ts)
		h.Set(webhook.HeaderSignature, sig)
		err := webhook.Verify(secret, h, body, time.Unix(1700000000, 0), time.Hour)
		if err == nil && sig != webhook.Sign(secret, h.Get(webhook.HeaderTimestamp), body) {
			t.Fatalf("accepted a signature Sign would not make: ts %q sig %q", ts, sig)
		}
	})
}

func TestConfigFromArgs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", string(secret)+"\n", 0o600)
	open := write("open", string(secret), 0o644)
	short := write("short", "tiny", 0o600)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // error substring; "" = ok
	}{
		{name: "flags", args: []string{"--url", "https://hooks.example.com/x", "--secret-file", good}},
		{name: "env", env: map[string]string{"SSHWARD_WEBHOOK_URL": "http://127.0.0.1:9/x", "SSHWARD_WEBHOOK_SECRET_FILE": good}},
		{name: "no url", args: []string{"--secret-file", good}, want: "--url"},
		{name: "no secret", args: []string{"--url", "https://h/x"}, want: "--secret-file"},
		{name: "group-readable secret", args: []string{"--url", "https://h/x", "--secret-file", open}, want: "chmod 600"},
		{name: "short secret", args: []string{"--url", "https://h/x", "--secret-file", short}, want: "fewer than"},
		{name: "missing secret file", args: []string{"--url", "https://h/x", "--secret-file", filepath.Join(dir, "nope")}, want: "no such file"},
		{name: "bad flag", args: []string{"--nope"}, want: "not defined"},
		{name: "stray argument", args: []string{"--url", "https://h/x", "--secret-file", good, "extra"}, want: "unexpected"},
		{name: "bad attempts", args: []string{"--url", "https://h/x", "--secret-file", good, "--attempts", "0"}, want: "positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := webhook.ConfigFromArgs(tt.args, func(k string) string { return tt.env[k] })
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(cfg.Secret, secret) {
				t.Errorf("secret = %q, want the file without its newline", cfg.Secret)
			}
			if _, err := webhook.New(cfg); err != nil {
				t.Errorf("New: %v", err)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name string
		cfg  webhook.Config
		want string
	}{
		{"no url", webhook.Config{Secret: secret}, "URL"},
		{"ftp", webhook.Config{URL: "ftp://h/x", Secret: secret}, "URL"},
		{"short secret", webhook.Config{URL: "https://h/x", Secret: []byte("x")}, "at least"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := webhook.New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), string(secret)) {
				t.Fatalf("New = %v, want %q", err, tt.want)
			}
		})
	}
}
