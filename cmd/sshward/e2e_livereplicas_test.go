package main_test

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/playback/objstore/s3test"
)

// TestLiveSessionThroughAnotherReplica runs two real sshward-playback
// serve processes (A and B) on one bucket of a real S3-compatible server
// (versitygw), a real CA, a real sshward-agent shipping to A only, and an
// interactive stock ssh session. Everything the auditor does goes through
// B. What each step tries to break:
//
//   - listing: `sshward sessions --live --playback B` lists the session A
//     receives;
//   - following: `sshward play ID --playback B` shows a line typed after
//     the follow began (the push path through B's forward to A);
//   - rights: alice (an engineer) is refused on B, for the list and for the
//     forwarded follow;
//   - terminating: `sshward terminate ID --playback B` ends the session, the
//     user's terminal shows the reason, and the follows through B and
//     directly on A end with it.
func TestLiveSessionThroughAnotherReplica(t *testing.T) {
	c := newAgentCLI(t, "github.com/sshward/sshward/cmd/sshward-playback")
	s3 := s3test.Start(t)
	work := t.TempDir()
	ca := c.startRecordingCA(t, work)
	a := c.startS3Replica(t, ca, s3, filepath.Join(work, "playback-a"))
	b := c.startS3Replica(t, ca, s3, filepath.Join(work, "playback-b"))
	host := c.startRecordedHost(t, ca, work, a.url)

	in, term, sshDone := openTypedSession(t, host.agentAddr, host.cert)
	io.WriteString(in, "echo before-$((6*7))\n")
	waitFor(t, "the command's output on the user's terminal", 30*time.Second, func() bool {
		return strings.Contains(term.String(), "before-42")
	})
	var id string
	waitFor(t, "sshward sessions --live through B to list the session A receives", 60*time.Second, func() bool {
		res := c.run(host.auditor, "", "sshward", "sessions", "--live", "--json", "--playback", b.url)
		var list []sessionSummaryOut
		if res.code != 0 || json.Unmarshal([]byte(res.stdout), &list) != nil || len(list) != 1 || !list[0].Live {
			return false
		}
		id = list[0].ID
		return true
	})
	if res := c.run(host.alice, "", "sshward", "sessions", "--live", "--playback", b.url); res.code == 0 || !strings.Contains(res.stderr, "auditors") {
		t.Fatalf("alice listing through B: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := c.run(host.alice, "", "sshward", "play", id, "--playback", b.url); res.code == 0 || !strings.Contains(res.stderr, "auditors") {
		t.Fatalf("alice following through B: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	// play follows the live session, through B and (to compare) on A.
	follow := func(server string) (*lockedBuffer, <-chan error) {
		out := &lockedBuffer{}
		p := exec.Command(filepath.Join(c.bin, "sshward"), "play", id, "--playback", server)
		p.Env = append(append(os.Environ(), c.env...), "SSHWARD_HOME="+host.auditor)
		p.Stdout, p.Stderr = out, out
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Wait() }()
		t.Cleanup(func() { p.Process.Kill() })
		return out, done
	}
	viaB, viaBDone := follow(b.url)
	direct, directDone := follow(a.url)
	waitFor(t, "both follows to show what was printed before they began", 60*time.Second, func() bool {
		return strings.Contains(viaB.String(), "before-42") && strings.Contains(direct.String(), "before-42")
	})
	typed := time.Now()
	io.WriteString(in, "echo after-$((7*8))\n")
	var throughB, onA time.Duration
	waitFor(t, "a line typed after the follow began to reach the follow through B", 30*time.Second, func() bool {
		if onA == 0 && strings.Contains(direct.String(), "after-56") {
			onA = time.Since(typed)
		}
		if throughB == 0 && strings.Contains(viaB.String(), "after-56") {
			throughB = time.Since(typed)
		}
		return throughB != 0 && onA != 0
	})
	t.Logf("typed line shown by the follow through B after %v, directly on A after %v", throughB.Round(time.Millisecond), onA.Round(time.Millisecond))

	c.ok(host.auditor, "", "sshward", "terminate", id, "--reason", "containment of incident 4711", "--playback", b.url)
	select {
	case <-sshDone:
	case <-time.After(60 * time.Second):
		t.Fatalf("the session did not end after terminate through B:\n%s", term.String())
	}
	if !strings.Contains(term.String(), "containment of incident 4711") {
		t.Fatalf("the user's terminal does not show the reason:\n%s", term.String())
	}
	for what, done := range map[string]<-chan error{"through B": viaBDone, "on A": directDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("the follow %s ended with %v", what, err)
			}
		case <-time.After(90 * time.Second):
			t.Fatalf("the follow %s did not end with the session", what)
		}
	}
}
