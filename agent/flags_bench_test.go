package agent

import (
	"bytes"
	"testing"

	"github.com/sshward/sshward/ca/api"
)

// BenchmarkFlagsOutput: the cost of the default rules on a session's
// output, per byte of text (80-column lines) and of binary-like output.
func BenchmarkFlagsOutput(b *testing.B) {
	for _, bc := range []struct {
		name  string
		chunk []byte
	}{
		{"text", bytes.Repeat([]byte("drwxr-xr-x  2 root root 4096 Dec  4 23:12 some-directory-name-here\r\n"), 32<<10/72)},
		{"zeros", make([]byte, 32<<10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := &sessionFlags{rules: compileFlagRules(api.DefaultFlagRules())}
			f.overDone = map[string]bool{"large-download": true} // no session to raise on
			b.SetBytes(int64(len(bc.chunk)))
			b.ReportAllocs()
			for b.Loop() {
				f.output(bc.chunk)
			}
		})
	}
}

// TestFlagsOutputSplit: a printed line is matched whole whatever the
// chunks it arrives in, on the fast path (no literal in the chunk) and the
// slow one, including a literal cut in two by the chunk boundary.
func TestFlagsOutputSplit(t *testing.T) {
	const key = "-----BEGIN OPENSSH PRIVATE KEY-----"
	text := "listing\r\n" + key + "\r\nb3BlbnNzaC1rZXk\r\n"
	for cut := 1; cut < len(text); cut++ {
		f := &sessionFlags{rules: compileFlagRules(api.DefaultFlagRules())}
		f.mu.Lock()
		hits := append(f.outputLinesLocked([]byte(text[:cut])), f.outputLinesLocked([]byte(text[cut:]))...)
		f.mu.Unlock()
		if len(hits) != 1 || hits[0].rule.Name != "private-key-output" {
			t.Fatalf("cut at %d: hits %+v", cut, hits)
		}
	}
	f := &sessionFlags{rules: compileFlagRules(api.DefaultFlagRules())}
	f.mu.Lock()
	defer f.mu.Unlock()
	if hits := f.outputLinesLocked(bytes.Repeat([]byte("-----BEGIN PUBLIC KEY-----\r\n"), 100)); len(hits) != 0 {
		t.Fatalf("public keys flagged: %+v", hits)
	}
}
