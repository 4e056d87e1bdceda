package playback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/objstore/s3test"
)

// TestPlaybackReplicasShareOneBucket: two playback replicas on one real
// S3-compatible server (versitygw). The replica receiving a live recording
// stops in the middle of it; the agent moves to the other, which takes
// the resume offset from the parts in the bucket (not from its own empty
// disk): what each step tries to break:
//
//   - a gap: bytes the first replica acknowledged must not be asked for
//     again nor skipped: the second replica resumes from the bucket
//     (ReplicaStatus.Resumed), the result is the spool byte for byte;
//   - a duplicate: a line written before the failover appears once;
//   - a third replica that took no part sees the finished recording within
//     a few seconds (search finds its text, its detail verifies), through
//     the bucket alone;
//   - leftovers: the upload's parts leave the bucket once it is archived.
func TestPlaybackReplicasShareOneBucket(t *testing.T) {
	s3 := s3test.Start(t)
	bucket := openBucket(t, s3)
	w := newWorld(t)
	first := w.startServer(t, serverOpts{objects: bucket})
	second := w.startServer(t, serverOpts{objects: bucket})
	h := newHost(t, "web1.staging", w.ca.HostCA, ssh.HostCert)
	a := w.startAgent(t, h, first.url, agentOpts{fallbacks: []string{second.url}})
	rec := a.create(t, "s-replicas", "staging", false)
	writeOutput(t, a, rec, 0, 100)
	waitFor(t, "the live recording to stream to the first replica and its parts to reach the bucket", 15*time.Second, func() bool {
		var d playback.SessionDetail
		status, body := w.get(t, first.url+"/api/sessions/s-replicas", w.auditor)
		if status != http.StatusOK || json.Unmarshal(body, &d) != nil || d.Bytes < 100*60 {
			return false
		}
		var shared int64
		for o, err := range bucket.List(context.Background(), "uploads/s-replicas/") {
			if err != nil {
				return false
			}
			if strings.HasSuffix(o.Key, ".part") {
				shared += o.Size
			}
		}
		return shared >= d.Bytes
	})
	first.stop()
	writeOutput(t, a, rec, 100, 100)
	closeRec(t, rec)
	spoolCopy := readFile(t, filepath.Join(a.spool.Dir(), "s-replicas.cast"))
	got := w.shipped(t, a, second.url, "s-replicas")
	if !bytes.Equal(got, spoolCopy) {
		t.Fatalf("the second replica holds %d bytes, the spool %d: not the same recording", len(got), len(spoolCopy))
	}
	if st := second.ReplicaStatus(); st.Resumed != 1 || st.ResumedBytes < 100*60 {
		t.Fatalf("the second replica did not resume from the bucket: %+v", st)
	}
	d := w.detail(t, second.url, "s-replicas")
	if d.Integrity != playback.IntegrityVerified || !d.Complete || d.Live {
		t.Fatalf("on the second replica: %+v", d.SessionSummary)
	}
	for _, line := range []string{"output line 000050", "output line 000150"} {
		if n := strings.Count(string(got), line); n != 1 {
			t.Errorf("%q appears %d times", line, n)
		}
	}

	// A third replica, never part of the upload, on the same bucket.
	third := w.startServer(t, serverOpts{objects: bucket})
	start := time.Now()
	waitFor(t, "search on the third replica to find the recording ingested through the others", 20*time.Second, func() bool {
		var ans searchAnswer
		w.getJSON(t, third.url+"/api/search?q=000150", w.auditor, &ans)
		return len(ans.Hits) > 0 && ans.Hits[0].SessionID == "s-replicas"
	})
	t.Logf("found on the third replica %v after it started", time.Since(start).Round(time.Millisecond))
	if d := w.detail(t, third.url, "s-replicas"); d.Integrity != playback.IntegrityVerified || !d.Complete {
		t.Fatalf("on the third replica: %+v", d.SessionSummary)
	}
	waitFor(t, "the upload's parts to leave the bucket", 15*time.Second, func() bool {
		n := 0
		for range bucket.List(context.Background(), "uploads/s-replicas/") {
			n++
		}
		return n == 0
	})
}
