package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/plugins"
	"github.com/sshward/sshward/plugins/plugintest"
)

// testBin is the steerable test plugin, built once by TestMain.
var testBin plugintest.Binary

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sshward-plugins-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	testBin, err = plugintest.Build(ctx, dir, plugintest.TestPlugin)
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

// load starts the test plugin as kind; dir receives its reports.
func load(t *testing.T, kind plugins.Kind, mod func(*plugins.Config)) (*plugins.Client, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := plugins.Config{
		Name: "test", Kind: kind, Path: testBin.Path, SHA256: testBin.SHA256,
		Env: []string{"TESTPLUGIN_KIND=" + string(kind), "TESTPLUGIN_DIR=" + dir},
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := plugins.Load(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		if pids := plugintest.Children(t, testBin.Path); len(pids) != 0 {
			t.Errorf("plugin processes left after Close: %v", pids)
		}
	})
	return c, dir
}

func pidFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "pid-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func req(reason string) ca.AccessRequestInfo {
	return ca.AccessRequestInfo{ID: "REQ-" + strings.ReplaceAll(reason, " ", "-"), Phase: "create", Requester: "alice", Tier: "break-glass", Reason: reason}
}

func TestReviewRealPlugin(t *testing.T) {
	c, dir := load(t, plugins.KindApproval, nil)
	tests := []struct {
		reason  string
		want    ca.PolicyDecision
		wantErr error
	}{
		{reason: "INC-1", want: ca.PolicyDecision{Reason: "allowed by " + strings.TrimPrefix(filepath.Base(pidFiles(t, dir)[0]), "pid-")}},
		{reason: "deny no ticket", want: ca.PolicyDecision{Deny: true, Reason: "no ticket"}},
		{reason: "deny", want: ca.PolicyDecision{Deny: true, Reason: "denied by approval plugin test"}},
		{reason: "extra 2", want: ca.PolicyDecision{ExtraApprovals: 2, Reason: "extra 2"}},
		{reason: "error", wantErr: plugins.ErrPlugin},
		{reason: "panic", wantErr: plugins.ErrProtocol},
		{reason: "bad", wantErr: plugins.ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			d, err := c.Review(t.Context(), req(tt.reason))
			if tt.wantErr != nil {
				var pe *plugins.Error
				if !errors.Is(err, tt.wantErr) || !errors.As(err, &pe) || pe.Plugin != "test" || pe.Op != "review" {
					t.Fatalf("err = %v, want %v from plugin test", err, tt.wantErr)
				}
				return
			}
			if err != nil || d != tt.want {
				t.Fatalf("review = %+v, %v; want %+v", d, err, tt.want)
			}
		})
	}
	// Errors, panics and bad answers are the plugin's, not a crash: one
	// process served them all.
	if n := len(pidFiles(t, dir)); n != 1 {
		t.Errorf("%d processes started, want 1", n)
	}
	if _, err := c.Review(t.Context(), req("x")); err != nil {
		t.Fatal(err)
	}
	if err := c.Notify(t.Context(), store.AuditEvent{Seq: 1, Type: "login"}); !errors.Is(err, plugins.ErrWrongKind) {
		t.Errorf("Notify on an approval plugin: %v, want ErrWrongKind", err)
	}
}

func TestKilledMidCallFailsFastAndRestarts(t *testing.T) {
	c, dir := load(t, plugins.KindApproval, nil)
	errc := make(chan error, 1)
	go func() { _, err := c.Review(t.Context(), req("sleep")); errc <- err }()
	pids := plugintest.WaitChildren(t, testBin.Path, 1, 10*time.Second)
	plugintest.WaitFile(t, filepath.Join(dir, fmt.Sprintf("busy-%d", pids[0])), 10*time.Second)

	killed := time.Now()
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, plugins.ErrUnavailable) {
			t.Fatalf("review of a killed plugin: %v, want ErrUnavailable", err)
		}
		if d := time.Since(killed); d > 2*time.Second {
			t.Errorf("the failed call took %s after the kill", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("review hung after the plugin was killed")
	}

	d, err := c.Review(t.Context(), req("INC-2"))
	if err != nil {
		t.Fatalf("the call after the kill did not restart the plugin: %v", err)
	}
	if strings.HasSuffix(d.Reason, fmt.Sprint(pids[0])) {
		t.Errorf("answered by the killed pid %d", pids[0])
	}
	if n := len(pidFiles(t, dir)); n != 2 {
		t.Errorf("%d processes started, want 2", n)
	}
}

func TestCrashDuringCallRestartsWithBackoff(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	c, dir := load(t, plugins.KindApproval, func(cfg *plugins.Config) {
		cfg.Now = clock
		cfg.RestartBackoff = time.Second
		cfg.MaxRestartBackoff = 4 * time.Second
	})
	steps := []struct {
		name      string
		advance   time.Duration
		reason    string
		wantErr   error
		wantStart int // processes started so far
		wantWait  string
	}{
		{name: "crash", reason: "exit", wantErr: plugins.ErrUnavailable, wantStart: 1},
		{name: "first restart is immediate, crashes again", reason: "exit", wantErr: plugins.ErrUnavailable, wantStart: 2},
		{name: "inside the backoff: fail fast, no start", reason: "INC-1", wantErr: plugins.ErrUnavailable, wantStart: 2, wantWait: "next start in 1s"},
		{name: "after the backoff: restart, crash again", advance: time.Second, reason: "exit", wantErr: plugins.ErrUnavailable, wantStart: 3},
		{name: "backoff doubled", advance: time.Second, reason: "INC-1", wantErr: plugins.ErrUnavailable, wantStart: 3, wantWait: "next start in 1s"},
		{name: "restart after the doubled wait", advance: time.Second, reason: "INC-1", wantStart: 4},
		{name: "an answered call resets the backoff", reason: "exit", wantErr: plugins.ErrUnavailable, wantStart: 4},
		{name: "immediate restart again", reason: "INC-1", wantStart: 5},
	}
	for _, s := range steps {
		advance(s.advance)
		_, err := c.Review(t.Context(), req(s.reason))
		if s.wantErr == nil && err != nil || s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
		}
		if s.wantWait != "" && !strings.Contains(err.Error(), s.wantWait) {
			t.Errorf("%s: err %q does not say %q", s.name, err, s.wantWait)
		}
		if n := len(pidFiles(t, dir)); n != s.wantStart {
			t.Fatalf("%s: %d processes started, want %d", s.name, n, s.wantStart)
		}
	}
}

func TestContextCancellationReachesPlugin(t *testing.T) {
	c, dir := load(t, plugins.KindApproval, nil)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	r := req("sleep")
	go func() { _, err := c.Review(ctx, r); errc <- err }()
	pids := plugintest.WaitChildren(t, testBin.Path, 1, 10*time.Second)
	plugintest.WaitFile(t, filepath.Join(dir, fmt.Sprintf("busy-%d", pids[0])), 10*time.Second)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("review err = %v, want context.Canceled", err)
	}
	got := plugintest.WaitFile(t, filepath.Join(dir, "cancelled-"+r.ID), 10*time.Second)
	if !strings.HasPrefix(string(got), context.Canceled.Error()) {
		t.Errorf("the plugin's ctx ended with %q, want %q", got, context.Canceled)
	}

	// A deadline travels too (gRPC sends it as a timeout, so the plugin's
	// copy is close to ours, not equal).
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	want, _ := ctx.Deadline()
	r2 := req("sleep")
	r2.ID = "REQ-deadline"
	if _, err := c.Review(ctx, r2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("review err = %v, want context.DeadlineExceeded", err)
	}
	got = plugintest.WaitFile(t, filepath.Join(dir, "cancelled-"+r2.ID), 10*time.Second)
	_, ds, ok := strings.Cut(string(got), " deadline=")
	if !ok {
		t.Fatalf("the plugin's ctx had no deadline: %q", got)
	}
	if d, err := time.Parse(time.RFC3339Nano, ds); err != nil || d.Sub(want).Abs() > 100*time.Millisecond {
		t.Errorf("the plugin's deadline %s (%v), want about %s", ds, err, want.UTC())
	}
	// The caller gave up; the plugin was not at fault and keeps running.
	if _, err := c.Review(t.Context(), req("INC-3")); err != nil {
		t.Fatal(err)
	}
	if n := len(pidFiles(t, dir)); n != 1 {
		t.Errorf("%d processes started, want 1", n)
	}
}

func TestHungPluginIsReplaced(t *testing.T) {
	c, dir := load(t, plugins.KindApproval, func(cfg *plugins.Config) { cfg.CallTimeout = 300 * time.Millisecond })
	start := time.Now()
	_, err := c.Review(t.Context(), req("sleep"))
	if !errors.Is(err, plugins.ErrUnavailable) || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("review err = %v, want ErrUnavailable naming the timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the timed-out call took %s", d)
	}
	if _, err := c.Review(t.Context(), req("INC-4")); err != nil {
		t.Fatal(err)
	}
	if n := len(pidFiles(t, dir)); n != 2 {
		t.Errorf("%d processes started, want 2", n)
	}
}

func TestLoadRefuses(t *testing.T) {
	notPlugin := filepath.Join(t.TempDir(), "true")
	if err := os.WriteFile(notPlugin, []byte("#!/bin/sh\necho 'not a plugin' >&2\nexit 1\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	notPluginSum, err := plugintest.Sum(notPlugin)
	if err != nil {
		t.Fatal(err)
	}
	wrongSum := strings.Repeat("0", 64)
	tests := []struct {
		name    string
		mod     func(*plugins.Config)
		wantErr error
		want    []string // in the message
	}{
		{name: "checksum mismatch", mod: func(c *plugins.Config) { c.SHA256 = wrongSum }, wantErr: plugins.ErrChecksum,
			want: []string{testBin.SHA256, wrongSum, testBin.Path}},
		{name: "missing binary", mod: func(c *plugins.Config) { c.Path = "/nonexistent/sshward-plugin" }, wantErr: os.ErrNotExist},
		{name: "wrong kind", mod: func(c *plugins.Config) { c.Env[0] = "TESTPLUGIN_KIND=notifier" }, wantErr: plugins.ErrWrongKind,
			want: []string{"serves the notifier contract but is configured as approval"}},
		{name: "not a plugin", mod: func(c *plugins.Config) { c.Path, c.SHA256 = notPlugin, notPluginSum }, want: []string{"not a plugin"}},
		{name: "plugin exits at start", mod: func(c *plugins.Config) { c.Env = c.Env[:1] }, want: []string{"TESTPLUGIN_DIR is not set"}},
		{name: "relative path", mod: func(c *plugins.Config) { c.Path = "bin/x" }, want: []string{"absolute"}},
		{name: "bad sha256", mod: func(c *plugins.Config) { c.SHA256 = "abc" }, want: []string{"sha256sum"}},
		{name: "bad kind", mod: func(c *plugins.Config) { c.Kind = "audit" }, want: []string{`kind "audit"`}},
		{name: "bad name", mod: func(c *plugins.Config) { c.Name = "a b" }, want: []string{"name"}},
		{name: "bad env", mod: func(c *plugins.Config) { c.Env = append(c.Env, "NOEQUALS") }, want: []string{"KEY=VALUE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := plugins.Config{Name: "test", Kind: plugins.KindApproval, Path: testBin.Path, SHA256: testBin.SHA256,
				Env: []string{"TESTPLUGIN_KIND=approval", "TESTPLUGIN_DIR=" + dir}, StartTimeout: 5 * time.Second}
			tt.mod(&cfg)
			c, err := plugins.Load(t.Context(), cfg)
			if err == nil {
				c.Close()
				t.Fatal("Load succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q does not mention %q", err, w)
				}
			}
			if tt.wantErr == plugins.ErrChecksum {
				if n := len(pidFiles(t, dir)); n != 0 {
					t.Errorf("a binary with the wrong checksum ran %d times", n)
				}
			}
			if pids := plugintest.Children(t, testBin.Path); len(pids) != 0 {
				t.Errorf("refused plugin left processes: %v", pids)
			}
		})
	}
}

func TestBinaryReplacedAfterLoadIsNotRestarted(t *testing.T) {
	// A copy we may overwrite.
	path := filepath.Join(t.TempDir(), "plugin")
	data, err := os.ReadFile(testBin.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o700); err != nil {
		t.Fatal(err)
	}
	c, dir := load(t, plugins.KindApproval, func(cfg *plugins.Config) { cfg.Path = path })
	if _, err := c.Review(t.Context(), req("exit")); !errors.Is(err, plugins.ErrUnavailable) {
		t.Fatalf("crash: %v", err)
	}
	if err := os.WriteFile(path, append(data, 0), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = c.Review(t.Context(), req("INC-5"))
	if !errors.Is(err, plugins.ErrUnavailable) || !errors.Is(err, plugins.ErrChecksum) {
		t.Fatalf("restart of a replaced binary: %v, want ErrUnavailable wrapping ErrChecksum", err)
	}
	if n := len(pidFiles(t, dir)); n != 1 {
		t.Errorf("%d processes started, want 1", n)
	}
}

func TestEnvironmentIsNotInherited(t *testing.T) {
	t.Setenv("SECRET", "ca-passphrase")
	c, _ := load(t, plugins.KindApproval, func(cfg *plugins.Config) { cfg.Env = append(cfg.Env, "FOO=bar") })
	d, err := c.Review(t.Context(), req("env"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Reason != "SECRET= FOO=bar" {
		t.Fatalf("plugin environment: %q, want only the configured FOO", d.Reason)
	}
}

func TestNotifyRealPlugin(t *testing.T) {
	c, dir := load(t, plugins.KindNotifier, nil)
	for seq := uint64(1); seq <= 3; seq++ {
		if err := c.Notify(t.Context(), store.AuditEvent{Seq: seq, Type: "login", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Notify(t.Context(), store.AuditEvent{Seq: 4, Type: "test.fail"}); !errors.Is(err, plugins.ErrPlugin) {
		t.Errorf("failing notify: %v, want ErrPlugin", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "notified")); string(got) != "1\n2\n3\n" {
		t.Errorf("delivered %q", got)
	}
	if _, err := c.Review(t.Context(), req("x")); !errors.Is(err, plugins.ErrWrongKind) {
		t.Errorf("Review on a notifier: %v, want ErrWrongKind", err)
	}
}

func TestCloseAndCleanupLeaveNoProcess(t *testing.T) {
	c, _ := load(t, plugins.KindNotifier, nil)
	plugintest.WaitChildren(t, testBin.Path, 1, 5*time.Second)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if pids := plugintest.Children(t, testBin.Path); len(pids) != 0 {
		t.Fatalf("processes left after Close: %v", pids)
	}
	if err := c.Notify(t.Context(), store.AuditEvent{Seq: 1, Type: "login"}); !errors.Is(err, plugins.ErrClosed) {
		t.Errorf("Notify after Close: %v, want ErrClosed", err)
	}

	// CleanupClients is the safety net for a Client nobody closed.
	dir := t.TempDir()
	leak, err := plugins.Load(t.Context(), plugins.Config{Name: "leak", Kind: plugins.KindNotifier, Path: testBin.Path, SHA256: testBin.SHA256,
		Env: []string{"TESTPLUGIN_KIND=notifier", "TESTPLUGIN_DIR=" + dir}})
	if err != nil {
		t.Fatal(err)
	}
	plugintest.WaitChildren(t, testBin.Path, 1, 5*time.Second)
	plugins.CleanupClients()
	if pids := plugintest.Children(t, testBin.Path); len(pids) != 0 {
		t.Fatalf("processes left after CleanupClients: %v", pids)
	}
	leak.Close() // its socket directory
}

func TestAllOf(t *testing.T) {
	type fake = fakePolicy
	tests := []struct {
		name    string
		members []ca.ApprovalPolicy
		want    ca.PolicyDecision
		wantErr bool
		asked   []int // members asked, by index
	}{
		{name: "none allows", want: ca.PolicyDecision{}},
		{name: "all allow, max extra", members: []ca.ApprovalPolicy{&fake{d: ca.PolicyDecision{ExtraApprovals: 1, Reason: "off call"}}, &fake{d: ca.PolicyDecision{ExtraApprovals: 2, Reason: "prod freeze"}}},
			want: ca.PolicyDecision{ExtraApprovals: 2, Reason: "off call; prod freeze"}, asked: []int{0, 1}},
		{name: "a denial wins", members: []ca.ApprovalPolicy{&fake{d: ca.PolicyDecision{ExtraApprovals: 1}}, &fake{d: ca.PolicyDecision{Deny: true, Reason: "no ticket"}}, &fake{}},
			want: ca.PolicyDecision{Deny: true, Reason: "no ticket"}, asked: []int{0, 1}},
		{name: "an error fails closed", members: []ca.ApprovalPolicy{&fake{err: plugins.ErrUnavailable}, &fake{}}, wantErr: true, asked: []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := plugins.AllOf(tt.members).Review(t.Context(), req("INC-1"))
			if (err != nil) != tt.wantErr || d != tt.want {
				t.Fatalf("AllOf = %+v, %v; want %+v (error %v)", d, err, tt.want, tt.wantErr)
			}
			for i, m := range tt.members {
				asked := m.(*fake).asked
				if want := slicesContains(tt.asked, i); asked != want {
					t.Errorf("member %d asked = %v, want %v", i, asked, want)
				}
			}
		})
	}
}

type fakePolicy struct {
	d     ca.PolicyDecision
	err   error
	asked bool
}

func (f *fakePolicy) Review(context.Context, ca.AccessRequestInfo) (ca.PolicyDecision, error) {
	f.asked = true
	return f.d, f.err
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
