package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
)

// stateFiles lists the sealed casts' state files in the agent's spool.
func stateFiles(t *testing.T, dataDir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dataDir, "spool", "*.cast.state"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newStateFile waits for a state file not in before and returns it.
func newStateFile(t *testing.T, dataDir string, before []string) string {
	t.Helper()
	var p string
	waitFor(t, "a new sealed recording in the spool", 30*time.Second, func() bool {
		for _, f := range stateFiles(t, dataDir) {
			if !slices.Contains(before, f) {
				p = f
				return true
			}
		}
		return false
	})
	return p
}

// TestAgentSpoolSealed (issue 13, section 4, the agent's spool): a real
// CA, a real sshward-playback serve with recordings.encryption, a real
// sshward-agent and stock ssh. What each step tries to break:
//
//   - the agent learns the server's recipients from its first upload and
//     caches them (0600) in its data directory;
//   - a thief of the agent's data directory (spool, state, caches), with
//     the playback server down so that recordings stay there, finds no
//     marker printed in a finished session nor in one cut by kill -9 of
//     the agent, as is, JSON-escaped or hex;
//   - kill -9 of the agent mid-session: after a restart the sealed
//     recording (which the agent cannot read) is repaired, shipped and
//     verified as from the host, incomplete, with the marker up to the cut;
//   - a sealed cast tampered with in the spool is refused by the server
//     with a clear reason (shown by sshward-agent status), and the other
//     recordings arrive.
func TestAgentSpoolSealed(t *testing.T) {
	c := newAgentCLI(t, "github.com/sshward/sshward/cmd/sshward-playback")
	work := t.TempDir()
	ca := c.startRecordingCA(t, work)
	k, _ := age.GenerateX25519Identity()
	keyFile := filepath.Join(work, "recordings.key")
	writeKey(t, keyFile, k)
	pbDir := filepath.Join(work, "playback")
	os.MkdirAll(pbDir, 0o700)
	cfg := "recordings:\n  encryption:\n    recipients: [" + k.Recipient().String() + "]\n    identity_file: " + keyFile + "\n"
	if err := os.WriteFile(filepath.Join(pbDir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	pbAddr := freeLoopback(t)
	pbURL := "https://" + pbAddr
	pb := c.startPlayback(pbDir, pbAddr, nil, c.playbackJoinArgs(t, ca, work)...)
	host := c.startRecordedHost(t, ca, work, pbURL)
	known := map[string]bool{}

	// The first recording teaches the agent the recipients.
	typedSession(t, host.agentAddr, host.cert, "echo first-$((20+1))")
	c.waitNewVerified(t, host.auditor, pbURL, known)
	cache := filepath.Join(host.dataDir, "spool-recipients")
	waitFor(t, "the agent caches the spool recipients", 30*time.Second, func() bool {
		b, err := os.ReadFile(cache)
		return err == nil && strings.Contains(string(b), k.Recipient().String())
	})
	if fi, _ := os.Stat(cache); fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s is mode %v, want 0600", cache, fi.Mode().Perm())
	}

	// The server goes down: recordings stay in the spool. The markers are
	// printed, never typed (the terminal echoes what is typed).
	pb.stop()
	stamp := fmt.Sprint(time.Now().UnixNano() % 1e9)
	markerA, markerB := "sealed-a-"+stamp, "sealed-b-"+stamp
	printf := func(m string) string { return fmt.Sprintf("printf '%%s%%s\\n' '%s' '%s'", m[:5], m[5:]) }
	typedSession(t, host.agentAddr, host.cert, printf(markerA))

	// B is cut by kill -9 of the agent once the marker is sealed in the
	// spool: once the terminal showed it and two more frames were sealed
	// after that (the recorder runs beside the session; each flush seals
	// what it was given).
	before := stateFiles(t, host.dataDir)
	in, seen, ended := openTypedSession(t, host.agentAddr, host.cert)
	io.WriteString(in, printf(markerB)+"\n")
	stateB := newStateFile(t, host.dataDir, before)
	waitFor(t, "the terminal shows marker B", 30*time.Second, func() bool { return strings.Contains(seen.String(), markerB) })
	grew, last := 0, int64(-1)
	waitFor(t, "two frames sealed after marker B", 30*time.Second, func() bool {
		fi, err := os.Stat(stateB)
		if err != nil {
			t.Fatal(err)
		}
		if last >= 0 && fi.Size() > last {
			grew++
		}
		if fi.Size() != last {
			last = fi.Size()
			io.WriteString(in, "echo tick\n") // output for the next frame
		}
		return grew >= 2
	})
	if err := host.agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	host.agent.Wait()
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("ssh did not end when the agent was killed")
	}

	// C is finished, then tampered with while the agent is stopped.
	host.restart()
	before = stateFiles(t, host.dataDir)
	typedSession(t, host.agentAddr, host.cert, "echo tampered-$((6*7))")
	stateC := newStateFile(t, host.dataDir, before)
	host.agent.Process.Signal(os.Interrupt)
	host.agent.Wait()
	castC := strings.TrimSuffix(stateC, ".state")
	idC := strings.TrimSuffix(filepath.Base(castC), ".cast")
	data, err := os.ReadFile(castC)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-20] ^= 0x40 // inside the last frame's age payload
	if err := os.WriteFile(castC, data, 0o600); err != nil {
		t.Fatal(err)
	}

	// sshward-agent status says the spool is sealed: A, B and C are.
	var status struct {
		Spool struct {
			SealedTo int `json:"sealed_to"`
			Sealed   int `json:"sealed"`
		} `json:"spool"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-agent", "status", "--data", host.dataDir, "--json")), &status); err != nil {
		t.Fatal(err)
	}
	if status.Spool.SealedTo != 1 || status.Spool.Sealed != 3 {
		t.Fatalf("status: sealed to %d recipients, %d sealed recordings; want 1 and 3", status.Spool.SealedTo, status.Spool.Sealed)
	}

	// The thief's view: every file of the agent's data directory.
	assertNowhere(t, []string{markerA, markerB}, host.dataDir)

	// Everything comes back up: A and B arrive, verified; C is refused.
	host.restart()
	c.startPlayback(pbDir, pbAddr, nil)
	got := map[string]string{}
	for range 2 {
		id := c.waitNewVerified(t, host.auditor, pbURL, known)
		got[id] = c.run(host.auditor, "", "sshward", "export", id, "--playback", pbURL).stdout
	}
	var list []sessionSummaryOut
	if err := json.Unmarshal([]byte(c.ok(host.auditor, "", "sshward", "sessions", "--json", "--playback", pbURL)), &list); err != nil {
		t.Fatal(err)
	}
	complete := map[string]bool{}
	for _, s := range list {
		complete[s.ID] = s.Complete
	}
	var sawA, sawB bool
	for id, cast := range got {
		switch {
		case id == idC:
			t.Fatalf("the tampered recording %s was accepted", id)
		case strings.Contains(cast, markerA):
			sawA = complete[id]
		case strings.Contains(cast, markerB):
			sawB = !complete[id] // cut by the kill: incomplete, verified
		}
	}
	if !sawA || !sawB {
		t.Fatalf("A (complete, with its marker) %v, B (incomplete, with its marker) %v: %+v", sawA, sawB, list)
	}
	waitFor(t, "sshward-agent status names the refused recording and why", 60*time.Second, func() bool {
		res := c.run("", "", "sshward-agent", "status", "--data", host.dataDir, "--json")
		return strings.Contains(res.stdout, idC) && strings.Contains(res.stdout, "tampered with")
	})
}
