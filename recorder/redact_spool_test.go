package recorder_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// TestSpoolRedacts: a spool redacts by default, and its periodic flush
// (Recording.Flush) applies the flush rule: a token whose rest comes after
// two flushes is redacted whole, from its start to where it ends, and the
// file never holds any part of it. Commit writes without deciding.
func TestSpoolRedacts(t *testing.T) {
	s := recordertest.MustSpool(t, recorder.SpoolConfig{})
	r, err := s.Create(context.Background(), testMetadata("redact-1"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return r.Output([]byte("$ echo ghp_0123")) },
		r.Commit, r.Commit, // acknowledgement only: the start stays held
		r.Flush, r.Flush, // two flushes: redacted whole from here on
		func() error { return r.Output([]byte("456789abcdefghijklmnopqrstuvwxyzABCDEFG\r\n$ ")) },
		func() error {
			return r.Output([]byte("cat key.pem\r\n-----BEGIN RSA PRIVATE KEY-----\r\nMIIEow\r\n-----END RSA PRIVATE KEY-----\r\n"))
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	mid, err := os.ReadFile(r.CastPath())
	if err != nil {
		t.Fatal(err)
	}
	// Fragments long enough not to occur in event times (0.001234…).
	if strings.Contains(string(mid), "ghp_") || strings.Contains(string(mid), "echo 0123") {
		t.Fatalf("the file holds part of the token before the end:\n%s", mid)
	}
	status := 0
	if _, err := r.Close(context.Background(), recorder.EndInfo{ExitStatus: &status}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(r.CastPath())
	if err != nil {
		t.Fatal(err)
	}
	got := string(data)
	for _, leak := range []string{"ghp_", "echo 0123", "456789abcdef", "MIIEow", "PRIVATE KEY"} {
		if strings.Contains(got, leak) {
			t.Errorf("cast holds %q:\n%s", leak, got)
		}
	}
	rd, err := recorder.NewReader(strings.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for {
		e, err := rd.Next()
		if err != nil {
			break
		}
		if e.Code == recorder.CodeOutput {
			out.WriteString(e.Data)
		}
	}
	if want := "$ echo [REDACTED:github-token]\r\n$ cat key.pem\r\n[REDACTED:private-key]\r\n"; out.String() != want {
		t.Errorf("recorded output %q, want %q", out.String(), want)
	}
}
