package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sshward/sshward/plugins"
	"github.com/sshward/sshward/plugins/plugintest"
	"github.com/sshward/sshward/plugins/webhook"
)

const (
	webhookPkg = "github.com/sshward/sshward/plugins/webhook/cmd/sshward-plugin-webhook"
	oncallPkg  = "github.com/sshward/sshward/plugins/oncall/cmd/sshward-plugin-oncall"
)

var webhookSecret = []byte("e2e-webhook-secret-0123456789")

// hookReceiver verifies every webhook and records the event types and
// seqs it accepted.
type hookReceiver struct {
	*httptest.Server
	mu    sync.Mutex // guards the fields below
	seqs  map[uint64]string
	order []uint64
	bad   int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{seqs: map[uint64]string{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(webhookSecret, r.Header, body, time.Now(), time.Minute); err != nil {
			h.mu.Lock()
			h.bad++
			h.mu.Unlock()
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		ev, err := plugins.DecodeEvent(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.seqs[ev.Seq] = ev.Type
		h.order = append(h.order, ev.Seq)
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) has(seq uint64) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	typ, ok := h.seqs[seq]
	return typ, ok
}

// pluginsYAML is a config.yaml plugins section.
func pluginsYAML(entries ...string) string { return "plugins:\n" + strings.Join(entries, "") }

func pluginEntry(name, kind, path, sum string, args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return "  - name: " + name + "\n    kind: " + kind + "\n    path: " + strconv.Quote(path) + "\n    sha256: " + sum +
		"\n    args: [" + strings.Join(q, ", ") + "]\n"
}

func setPlugins(t *testing.T, caDir, section string) {
	t.Helper()
	p := filepath.Join(caDir, "config.yaml")
	cfg, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "\nplugins: []\n") {
		t.Fatalf("config.yaml has no empty plugins section:\n%s", cfg)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(cfg), "\nplugins: []\n", "\n"+section, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The CA runs a notifier and an approval plugin from config.yaml: the
// webhook gets every audit event (also those from before serve started),
// the on-call policy gates requests, a dead policy plugin denies (fail
// closed) until it can be restarted, and stopping the CA stops them all.
func TestServeRunsPlugins(t *testing.T) {
	hook := plugintest.MustBuild(t, webhookPkg)
	oncall := plugintest.MustBuild(t, oncallPkg)
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	home := filepath.Join(work, "home")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSHWARD_HOME=" + home, "SSH_AUTH_SOCK="}}
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}

	// The webhook binary lives in the CA directory: a relative path.
	if err := os.MkdirAll(filepath.Join(caDir, "plugins"), 0o700); err != nil {
		t.Fatal(err)
	}
	hookPath := filepath.Join(caDir, "plugins", "sshward-plugin-webhook")
	data, err := os.ReadFile(hook.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hookPath, data, 0o700); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(work, "webhook.secret")
	if err := os.WriteFile(secretFile, webhookSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	schedule := filepath.Join(work, "oncall.yaml")
	now := time.Now().UTC()
	if err := os.WriteFile(schedule, []byte("tiers: [break-glass]\nticket_pattern: '^INC-\\d+'\nshifts:\n  - {start: "+
		now.Add(-24*time.Hour).Format(time.RFC3339)+", end: "+now.Add(24*time.Hour).Format(time.RFC3339)+", users: [bob]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rcv := newHookReceiver(t)
	setPlugins(t, caDir, pluginsYAML(
		pluginEntry("webhook", "notifier", "plugins/sshward-plugin-webhook", hook.SHA256, "--url", rcv.URL+"/hook", "--secret-file", secretFile),
		pluginEntry("oncall", "approval", oncall.Path, oncall.SHA256, "--schedule", schedule),
	))

	// An event from before serve runs: the webhook gets it once serve starts.
	var alice struct {
		TOTPSecret string `json:"totp_secret"`
	}
	if err := json.Unmarshal([]byte(r.ok("alicepassword1\n", "sshward-ca", "users", "add", "alice", "--dir", caDir, "--groups", "oncall", "--totp", "--password-stdin", "--json")), &alice); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ca := startCA(t, r, caDir, addr)
	waitUntil(t, "the webhook receives user.add (seq 1)", 20*time.Second, func() bool { typ, ok := rcv.has(1); return ok && typ == "user.add" })
	if n := len(plugintest.Running(t, hookPath)) + len(plugintest.Running(t, oncall.Path)); n != 2 {
		t.Fatalf("%d plugin processes, want 2", n)
	}

	code, _ := totp.GenerateCode(alice.TOTPSecret, time.Now())
	r.ok("alicepassword1\n", "sshward", "login", "--ca", "https://"+addr, "--fingerprint", initRes.Fingerprint, "--user", "alice", "--password-stdin", "--otp", code)

	// The on-call policy gates requests.
	res := r.run("", "sshward", "request", "--tier", "break-glass", "--reason", "db is down")
	if res.code != 1 || !strings.Contains(res.stderr, `^INC-\d+`) {
		t.Fatalf("request without a ticket: %+v", res)
	}
	var req struct {
		ID              string `json:"id"`
		ApprovalsNeeded int    `json:"approvals_needed"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward", "request", "--tier", "break-glass", "--reason", "INC-4711 db is down", "--json")), &req); err != nil {
		t.Fatal(err)
	}
	if req.ApprovalsNeeded != 3 {
		t.Errorf("alice is not on call: approvals_needed = %d, want the tier's 2 + 1", req.ApprovalsNeeded)
	}

	// The policy plugin dies and cannot be restarted: requests are denied
	// with a reason (fail closed) until it can.
	pids := plugintest.Running(t, oncall.Path)
	if len(pids) != 1 {
		t.Fatalf("oncall processes: %v", pids)
	}
	away := oncall.Path + ".away"
	if err := os.Rename(oncall.Path, away); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res = r.run("", "sshward", "request", "--tier", "break-glass", "--reason", "INC-4712")
	if res.code != 1 || !strings.Contains(res.stderr, "approval policy is unavailable") {
		t.Fatalf("request while the policy plugin is gone: %+v", res)
	}
	if err := os.Rename(away, oncall.Path); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a request succeeds once the policy plugin is back", 15*time.Second, func() bool {
		return r.run("", "sshward", "request", "--tier", "break-glass", "--reason", "INC-4713").code == 0
	})

	// Every audit event reached the webhook, signed.
	var events []struct{ Seq uint64 }
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", caDir, "--json")), &events); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the webhook receives every audit event", 20*time.Second, func() bool {
		for _, e := range events {
			if _, ok := rcv.has(e.Seq); !ok {
				return false
			}
		}
		return true
	})
	if rcv.bad != 0 {
		t.Errorf("%d webhook requests failed verification", rcv.bad)
	}

	// Stopping the CA stops its plugins.
	if err := ca.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	ca.Wait()
	if left := append(plugintest.Running(t, hookPath), plugintest.Running(t, oncall.Path)...); len(left) != 0 {
		t.Fatalf("plugin processes left after the CA stopped: %v", left)
	}
}

func TestServeRefusesPluginProblems(t *testing.T) {
	hook := plugintest.MustBuild(t, webhookPkg)
	secretFile := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secretFile, webhookSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("0", 64)
	args := []string{"--url", "http://127.0.0.1:9/hook", "--secret-file", secretFile}
	tests := []struct {
		name    string
		section string
		want    []string
	}{
		{name: "checksum mismatch", section: pluginsYAML(pluginEntry("webhook", "notifier", hook.Path, wrong, args...)),
			want: []string{"refusing to start", "webhook", "checksum mismatch", hook.SHA256, wrong}},
		{name: "missing binary", section: pluginsYAML(pluginEntry("oncall", "approval", "/nonexistent/sshward-plugin-oncall", wrong)),
			want: []string{"refusing to start", "oncall", "no such file"}},
		{name: "wrong kind", section: pluginsYAML(pluginEntry("webhook", "approval", hook.Path, hook.SHA256, args...)),
			want: []string{"serves the notifier contract but is configured as approval"}},
		{name: "duplicate name", section: pluginsYAML(pluginEntry("a", "notifier", hook.Path, hook.SHA256, args...), pluginEntry("a", "notifier", hook.Path, hook.SHA256, args...)),
			want: []string{"used twice"}},
		{name: "plugin's own complaint", section: pluginsYAML(pluginEntry("webhook", "notifier", hook.Path, hook.SHA256, "--url", "http://127.0.0.1:9/")),
			want: []string{"--secret-file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caDir := filepath.Join(t.TempDir(), "ca")
			r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123"}}
			r.ok("", "sshward-ca", "init", "--dir", caDir)
			setPlugins(t, caDir, tt.section)
			res := r.run("", "sshward-ca", "serve", "--dir", caDir, "--listen", freeAddr(t))
			if res.code != 1 {
				t.Fatalf("serve exit %d, want 1; stderr: %s", res.code, res.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, res.stderr)
				}
			}
			if left := plugintest.Running(t, hook.Path); len(left) != 0 {
				t.Errorf("plugin processes left: %v", left)
			}
		})
	}
}
