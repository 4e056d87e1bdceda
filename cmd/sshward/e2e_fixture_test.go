package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/playback/objstore/s3test"
)

// recordingCA is a real sshward-ca served on loopback, its TLS root pinned
// by fingerprint, with two users: alice (engineers, password
// pw-alice-123456) and audrey (auditors, pw-audrey-123456). The recording
// e2e tests start from it.
type recordingCA struct{ dir, fp, url string }

func (c *accessCLI) startRecordingCA(t *testing.T, work string) recordingCA {
	t.Helper()
	ca := recordingCA{dir: filepath.Join(work, "ca")}
	ca.fp = c.initCAWithRoot(ca.dir)
	c.ok("", "pw-alice-123456\n", "sshward-ca", "users", "add", "alice", "--dir", ca.dir, "--groups", "engineers", "--password-stdin")
	c.ok("", "pw-audrey-123456\n", "sshward-ca", "users", "add", "audrey", "--dir", ca.dir, "--groups", "auditors", "--password-stdin")
	ca.url = "https://" + freeLoopback(t)
	c.serveProc(ca.dir, strings.TrimPrefix(ca.url, "https://"))
	return ca
}

// playbackJoinArgs makes a playback join token, writes it 0600 into dir
// and returns the sshward-playback serve flags that join the CA with it.
func (c *accessCLI) playbackJoinArgs(t *testing.T, ca recordingCA, dir string) []string {
	t.Helper()
	tok := strings.TrimSpace(c.ok("", "", "sshward-ca", "join-token", "--dir", ca.dir, "--playback", "127.0.0.1"))
	tokFile := filepath.Join(dir, "playback-join-token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--ca", ca.url, "--fingerprint", ca.fp, "--join-token-file", tokFile}
}

// recordedHost is an agent for web1.staging that records to playback,
// alice logged in with a staging certificate, and audrey logged in.
type recordedHost struct {
	agentAddr string
	cert      certOut // alice's staging certificate
	alice     string  // alice's home
	auditor   string  // audrey's home
	dataDir   string  // the agent's --data
	// agent is the running sshward-agent; restart starts it again on the
	// same data directory (after the test killed it) and sets agent.
	agent   *exec.Cmd
	restart func()
}

func (c *accessCLI) startRecordedHost(t *testing.T, ca recordingCA, work, playback string) *recordedHost {
	t.Helper()
	h := &recordedHost{agentAddr: freeLoopback(t), alice: filepath.Join(work, "home-alice"), auditor: filepath.Join(work, "home-audrey"),
		dataDir: filepath.Join(work, "agent")}
	hostTok := strings.TrimSpace(c.ok("", "", "sshward-ca", "join-token", "--dir", ca.dir, "--host", "web1.staging", "--tier", "staging"))
	h.restart = func() {
		t.Helper()
		h.agent = c.startAgentProc("staging", ca.url, ca.fp, hostTok, "web1.staging", h.dataDir, h.agentAddr, "--playback", playback)
	}
	h.restart()
	c.ok(h.alice, "pw-alice-123456\n", "sshward", "login", "--ca", ca.url, "--fingerprint", ca.fp, "--user", "alice", "--password-stdin")
	if err := json.Unmarshal([]byte(c.ok(h.alice, "", "sshward", "cert", "--tier", "staging", "--json")), &h.cert); err != nil {
		t.Fatal(err)
	}
	c.ok(h.auditor, "pw-audrey-123456\n", "sshward", "login", "--ca", ca.url, "--fingerprint", ca.fp, "--user", "audrey", "--password-stdin")
	return h
}

// s3RecordingsYAML is the recordings.s3 block of a playback config.yaml
// for the bucket of s3 (its secret key goes in SSHWARD_S3_SECRET_KEY).
func s3RecordingsYAML(s3 *s3test.Server) string {
	return fmt.Sprintf("  s3:\n    endpoint: %s\n    bucket: %s\n    region: us-east-1\n    access_key: %s\n    ca_file: %s\n",
		s3.Endpoint, s3.Bucket, s3.AccessKey, s3.CertFile())
}

// waitNewVerified waits for a recording not in known to be finished and
// verified on the playback server at url, as auditor sees it, adds it to
// known and returns its id.
func (c *accessCLI) waitNewVerified(t *testing.T, auditor, url string, known map[string]bool) string {
	t.Helper()
	var id string
	waitFor(t, "a new recording finished and verified", 90*time.Second, func() bool {
		res := c.run(auditor, "", "sshward", "sessions", "--json", "--playback", url)
		var list []sessionSummaryOut
		if res.code != 0 || json.Unmarshal([]byte(res.stdout), &list) != nil {
			return false
		}
		for _, s := range list {
			if !known[s.ID] && !s.Live && s.Integrity == "verified" {
				id = s.ID
				return true
			}
		}
		return false
	})
	known[id] = true
	return id
}
