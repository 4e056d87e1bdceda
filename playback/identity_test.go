package playback_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/playback"
)

func TestJoinOnceThenRestartWithoutToken(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	dir, addr := t.TempDir(), freeAddr(t)
	url := "https://" + addr
	jc := playback.JoinConfig{Dir: dir, CAURL: w.ca.URL, Fingerprint: w.ca.Fingerprint, URL: url}

	if _, err := playback.EnsureIdentity(ctx, jc, time.Now()); err == nil || !strings.Contains(err.Error(), "join-token") {
		t.Fatalf("first start without a token: %v", err)
	}
	jc.Token = w.playbackToken(t)
	id, err := playback.EnsureIdentity(ctx, jc, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tls.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	if got := w.ca.Authority.PlaybackURL(ctx); got != url {
		t.Fatalf("registered URL %q, want %q", got, url)
	}
	if len(id.HostCAs()) != 1 || string(id.HostCAs()[0].Marshal()) != string(w.ca.HostCA.PublicKey().Marshal()) {
		t.Fatal("host CA keys are not the CA's")
	}

	// The token is spent: another server cannot join with it.
	other := jc
	other.Dir = t.TempDir()
	if _, err := playback.Join(ctx, other); !api.IsCode(err, api.CodeTokenInvalid) {
		t.Fatalf("second join with the token: %v", err)
	}

	// A later start needs neither token nor CA flags.
	again, err := playback.EnsureIdentity(ctx, playback.JoinConfig{Dir: dir, URL: url}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !again.Leaf.Equal(id.Leaf) || again.CAURL != w.ca.URL {
		t.Fatal("restart did not reuse the saved identity")
	}
	if _, err := playback.EnsureIdentity(ctx, playback.JoinConfig{Dir: dir, URL: url}, id.Leaf.NotAfter.Add(time.Second)); err == nil {
		t.Fatal("an expired certificate was accepted without a new join")
	}

	// Clients that only know the CA's fingerprint verify the server.
	w.startServer(t, serverOpts{dir: dir, addr: addr})
	conn, err := tls.Dial("tcp", addr, tlsca.PinnedClientConfigFor(w.ca.Fingerprint, "127.0.0.1"))
	if err != nil {
		t.Fatalf("pinned client: %v", err)
	}
	conn.Close()
	bad := tlsca.PinnedClientConfigFor(strings.Repeat("ab", 32), "127.0.0.1")
	if conn, err := tls.Dial("tcp", addr, bad); err == nil {
		conn.Close()
		t.Fatal("a client pinning another root connected")
	}

	os.Chmod(filepath.Join(dir, "tls.key"), 0o644)
	if _, err := playback.LoadIdentity(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key was loaded: %v", err)
	}
	if _, err := playback.LoadIdentity(t.TempDir()); !errors.Is(err, playback.ErrNotJoined) {
		t.Fatalf("empty dir: %v", err)
	}
}

func TestSettings(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name    string
		yaml    string
		want    map[string]time.Duration // tier → retention
		sweep   time.Duration
		wantErr string
	}{
		{"default file", playback.DefaultConfigYAML, map[string]time.Duration{"staging": 30 * day, "production": 365 * day, "break-glass": 0, "other": 0}, time.Hour, ""},
		{"empty", "", map[string]time.Duration{"staging": 0}, time.Hour, ""},
		{"units", "retention: {a: 12h, b: 1.5d, c: forever}\ndefault: 7d\nsweep_interval: 10m\n", map[string]time.Duration{"a": 12 * time.Hour, "b": 36 * time.Hour, "c": 0, "z": 7 * day}, 10 * time.Minute, ""},
		{"bad duration", "retention: {staging: soon}\n", nil, 0, "retention of staging"},
		{"negative", "retention: {staging: -1d}\n", nil, 0, "retention of staging"},
		{"unknown key", "retension: {staging: 1d}\n", nil, 0, "retension"},
		{"tiny sweep", "sweep_interval: 1ms\n", nil, 0, "sweep_interval"},
		{"s3", "recordings: {s3: {endpoint: https://s3.example:9000, bucket: rec, access_key: ak, secret_key_file: /etc/k}}\n", map[string]time.Duration{}, time.Hour, ""},
		{"s3 without bucket", "recordings: {s3: {endpoint: https://s3.example:9000, access_key: ak}}\n", nil, 0, "needs endpoint, bucket and access_key"},
		{"s3 secret in the file", "recordings: {s3: {endpoint: https://s3.example:9000, bucket: b, access_key: ak, secret_key: hunter2}}\n", nil, 0, "secret_key"},
		{"s3 not a URL", "recordings: {s3: {endpoint: s3.example:9000, bucket: b, access_key: ak}}\n", nil, 0, "http(s) URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := playback.ParseSettings([]byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for tier, want := range tc.want {
				if got := st.Retention.For(tier); got != want {
					t.Errorf("%s: %v, want %v", tier, got, want)
				}
			}
			if st.SweepInterval != tc.sweep {
				t.Errorf("sweep %v, want %v", st.SweepInterval, tc.sweep)
			}
		})
	}
	dir := t.TempDir()
	if _, err := playback.LoadSettings(dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "config.yaml")); err != nil || string(b) != playback.DefaultConfigYAML {
		t.Fatalf("first start did not write the default settings: %v", err)
	}
}
