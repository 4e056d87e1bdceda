package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/playback/objstore/s3test"
)

// TestPlaybackReplicaKill9 runs two real sshward-playback serve processes
// on one bucket of a real S3-compatible server (versitygw), a real CA and a
// real sshward-agent given both playback URLs, and a stock ssh session
// printing numbered lines for several seconds. The replica receiving the
// upload is killed with SIGKILL once parts of it are in the bucket. What
// each step tries to break:
//
//   - the session itself: ssh must finish with every line (recording
//     trouble never cuts a session);
//   - a gap or a duplicate: the recording the auditor exports from the
//     surviving replica holds every numbered line exactly once, is complete
//     and verifies (signature and digest);
//   - "from either replica": the killed replica, started again on its own
//     directory (which holds a partial, unfinished copy of the upload),
//     must end up serving the same complete, verified recording, taken from
//     the bucket, not its stale partial copy.
func TestPlaybackReplicaKill9(t *testing.T) {
	c := newAgentCLI(t, "github.com/sshward/sshward/cmd/sshward-playback")
	s3 := s3test.Start(t)
	work := t.TempDir()
	ca := c.startRecordingCA(t, work)

	// Two playback replicas, one bucket.
	a := c.startS3Replica(t, ca, s3, filepath.Join(work, "playback0"))
	b := c.startS3Replica(t, ca, s3, filepath.Join(work, "playback1"))
	// The trust bundle names both playback replicas (an agent without
	// --playback ships to them in turn).
	cc, err := client.New(client.Config{URL: ca.url, Fingerprint: ca.fp})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cc.Trust(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(tr.PlaybackReplicas, a.url) || !slices.Contains(tr.PlaybackReplicas, b.url) {
		t.Fatalf("the trust bundle lists playback replicas %v, want %s and %s", tr.PlaybackReplicas, a.url, b.url)
	}
	host := c.startRecordedHost(t, ca, work, a.url+","+b.url)
	agentAddr, cert := host.agentAddr, host.cert

	// A session printing 400 numbered lines over about 12 s.
	const lines = 400
	seen, sshDone := numberedSession(t, agentAddr, cert, "output line", lines)

	// Kill the receiving replica once the upload's parts reach the bucket
	// and the session is still printing.
	uploads := filepath.Join(s3.Dir, s3.Bucket, "uploads")
	var id string
	waitFor(t, "50 lines printed and the upload's parts in the bucket through the first replica", 60*time.Second, func() bool {
		if !strings.Contains(seen.String(), "output line 00050") {
			return false
		}
		ids, _ := os.ReadDir(uploads)
		for _, d := range ids {
			parts, _ := filepath.Glob(filepath.Join(uploads, d.Name(), "*.part"))
			if len(parts) > 0 {
				id = d.Name()
				return true
			}
		}
		return false
	})
	if strings.Contains(seen.String(), fmt.Sprintf("output line %05d", lines)) {
		t.Fatal("the session ended before the kill: nothing was tested")
	}
	if err := a.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a.proc.cmd.Wait()
	t.Logf("killed the receiving replica in session %s after %q", id, lastLine(seen.String()))

	select {
	case err := <-sshDone:
		if err != nil {
			t.Fatalf("ssh: %v\n%s", err, seen.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the session did not finish:\n%s", seen.String())
	}
	for i := 1; i <= lines; i++ {
		if !strings.Contains(seen.String(), fmt.Sprintf("output line %05d", i)) {
			t.Fatalf("the session lost line %d:\n%s", i, seen.String())
		}
	}

	auditor := host.auditor
	// checkOn waits for the finished, verified recording on one replica
	// and checks every line is in it exactly once.
	checkOn := func(r *s3Replica, what string) {
		t.Helper()
		waitFor(t, "a complete, verified recording on "+what, 90*time.Second, func() bool {
			res := c.run(auditor, "", "sshward", "sessions", "--json", "--playback", r.url)
			var list []sessionSummaryOut
			if res.code != 0 || json.Unmarshal([]byte(res.stdout), &list) != nil {
				return false
			}
			for _, s := range list {
				if s.ID == id {
					return !s.Live && s.Complete && s.Integrity == "verified"
				}
			}
			return false
		})
		cast := c.ok(auditor, "", "sshward", "export", id, "--playback", r.url)
		for i := 1; i <= lines; i++ {
			if n := strings.Count(cast, fmt.Sprintf("output line %05d", i)); n != 1 {
				t.Fatalf("on %s, line %d appears %d times in the recording (want once: no gap, no duplicate)", what, i, n)
			}
		}
	}
	checkOn(b, "the surviving replica")

	// The killed replica again, on its own directory (it holds a partial
	// copy of the upload it was receiving).
	a.start(c, false)
	checkOn(a, "the killed replica, restarted")
	waitFor(t, "the upload's parts to leave the bucket", 30*time.Second, func() bool {
		parts, _ := filepath.Glob(filepath.Join(uploads, id, "*.part"))
		return len(parts) == 0
	})
}

// sessionSummaryOut is the part of sshward sessions --json this file reads.
type sessionSummaryOut struct {
	ID        string `json:"id"`
	Live      bool   `json:"live"`
	Complete  bool   `json:"complete"`
	Integrity string `json:"integrity"`
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\r\n")
	return s[strings.LastIndexAny(s, "\n")+1:]
}

// s3Replica is a sshward-playback serve process on its own directory and
// address, its recordings in the bucket of a real S3-compatible server.
type s3Replica struct {
	dir, addr, url string
	ca             recordingCA
	s3             *s3test.Server
	proc           *playbackProc
}

// startS3Replica configures dir for the bucket of s3 and starts the
// replica, joining ca.
func (c *accessCLI) startS3Replica(t *testing.T, ca recordingCA, s3 *s3test.Server, dir string) *s3Replica {
	t.Helper()
	r := &s3Replica{dir: dir, addr: freeLoopback(t), ca: ca, s3: s3}
	r.url = "https://" + r.addr
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("recordings:\n"+s3RecordingsYAML(s3)), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start(c, true)
	return r
}

// start runs the replica (again), joining the CA first when join is set.
func (r *s3Replica) start(c *accessCLI, join bool) {
	c.t.Helper()
	var args []string
	if join {
		args = c.playbackJoinArgs(c.t, r.ca, r.dir)
	}
	r.proc = c.startPlayback(r.dir, r.addr, []string{"SSHWARD_S3_SECRET_KEY=" + r.s3.SecretKey}, args...)
}
