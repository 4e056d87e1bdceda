package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sshward/sshward/agent"
	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/recorder"
)

func TestUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no flags", nil, 2, "--ca is required"},
		{"no tier", []string{"--ca", "https://ca:8443"}, 2, "--tier is required"},
		{"no data", []string{"--ca", "https://ca:8443", "--tier", "staging"}, 2, "--data is required"},
		{"first start needs the fingerprint", []string{"--ca", "https://ca:8443", "--tier", "staging", "--data", t.TempDir()}, 2, "--fingerprint is required"},
		{"unknown flag", []string{"--nope"}, 2, "-nope"},
		{"bad max startups", []string{"--ca", "https://ca:8443", "--tier", "staging", "--data", t.TempDir(), "--max-startups", "100:30:10"}, 2, "begin:rate:full"},
		{"zero per-source cap", []string{"--ca", "https://ca:8443", "--tier", "staging", "--data", t.TempDir(), "--max-startups-per-source", "0"}, 2, "at least 1"},
		{"negative penalty", []string{"--ca", "https://ca:8443", "--tier", "staging", "--data", t.TempDir(), "--per-source-penalty", "-1s"}, 2, "0 (off)"},
		{"zero handshake timeout", []string{"--ca", "https://ca:8443", "--tier", "staging", "--data", t.TempDir(), "--handshake-timeout", "0s"}, 2, "positive durations"},
		{"redact without a name", []string{"--ca", "https://ca:8443", "--tier", "staging", "--data", t.TempDir(), "--redact", "hvs[.][a-z]+"}, 2, "want NAME=REGEXP"},
		{"redact without a literal start", []string{"--ca", "https://ca:8443", "--tier", "staging", "--data", t.TempDir(), "--redact", "vault=(?i)hvs"}, 2, "must begin with literal text"},
		{"status without data", []string{"status"}, 2, "--data is required"},
		{"status of a missing directory", []string{"status", "--data", "/nonexistent/sshward"}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errOut)
			if code := cli.Exit(prog, err, &errOut); code != tt.code || !strings.Contains(errOut.String(), tt.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut.String(), tt.code, tt.msg)
			}
		})
	}
}

// TestStatus shows the spool of a data directory, as text and JSON.
func TestStatus(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	sp, err := recorder.OpenSpool(ctx, recorder.SpoolConfig{Dir: agent.SpoolDir(dir)})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"done-1", "live-2"} {
		rec, err := sp.Create(ctx, recorder.Metadata{SessionID: id, Identity: "alice@local", Principal: "deploy",
			Tier: "staging", Kind: recorder.KindExec, Command: "uptime"}, recorder.Header{Width: 80, Height: 24})
		if err != nil {
			t.Fatal(err)
		}
		if err := rec.Output([]byte("up 3 days\n")); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			status := 0
			if _, err := rec.Close(ctx, recorder.EndInfo{ExitStatus: &status}); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer sp.Close()

	var out bytes.Buffer
	if err := run(ctx, []string{"status", "--data", dir, "--json"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	var st agent.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if st.Joined || st.Spool.Finished != 1 || st.Spool.Unfinished != 1 || len(st.Spool.Recordings) != 2 {
		t.Errorf("status = %+v", st)
	}
	out.Reset()
	if err := run(ctx, []string{"status", "--data", dir}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"not joined", "1 unfinished", "1 finished awaiting upload", "done-1", "live-2", "finished", "live", "alice@local"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, out.String())
		}
	}
}
