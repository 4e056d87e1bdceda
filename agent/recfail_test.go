package agent

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// spoolAgent starts an agent of tier whose spool writes through disk.
func spoolAgent(t *testing.T, ca *fakeCA, tier string, disk *recordertest.DiskFull) *testAgent {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	sp, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{
		Dir: SpoolDir(dataDir), OpenFile: disk.OpenFile, FlushInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	home := t.TempDir()
	return startAgent(t, ca, agentOpts{tier: tier, dataDir: dataDir, cfg: func(c *Config) {
		c.Spool = RecorderSpool(sp)
		c.LookupUser = testUserLookup(t, home)
	}})
}

// TestSpoolUnwritable: with the spool failing, a production host (fails
// closed) refuses new sessions and ends running ones with a message; a
// staging host (fails open) lets them run and logs an alert.
func TestSpoolUnwritable(t *testing.T) {
	login := currentUser(t)
	tiers := []struct {
		tier   string
		ext    map[string]string
		closed bool
	}{
		{api.TierProduction, productionExt(), true},
		{api.TierStaging, stagingExt(), false},
	}
	for _, tt := range tiers {
		t.Run(tt.tier, func(t *testing.T) {
			ca := newFakeCA(t)
			disk := &recordertest.DiskFull{}
			a := spoolAgent(t, ca, tt.tier, disk)
			c := newSSHClient(t, ca, a)
			alert := map[string]string{"level": "ERROR", "alert": "true", "on_recording_failure": map[bool]string{true: "closed", false: "open"}[tt.closed]}

			t.Run("new session", func(t *testing.T) {
				k := ca.issue(t, c.home, certSpec{tier: tt.tier, keyID: "case spool new " + tt.tier, principals: []string{login}, extensions: tt.ext})
				disk.SetFull(true)
				defer disk.SetFull(false)
				out, errOut, err := c.run(k, login, nil, "echo ran")
				if tt.closed {
					if err == nil || strings.Contains(out, "ran") || !strings.Contains(errOut, "cannot record sessions") {
						t.Fatalf("production ran a session it cannot record: %v %q %q", err, out, errOut)
					}
					if got := exitCode(err); got != ExitRecordingFailed {
						t.Errorf("refused session: ssh exit status %d, want %d", got, ExitRecordingFailed)
					}
					a.logs.find(t, map[string]string{"msg": "audit", "action": AuditSessionRefused, "key_id": k.cert.KeyId})
				} else if err != nil || out != "ran\n" {
					t.Fatalf("staging refused a session: %v %q %q", err, out, errOut)
				} else if !strings.Contains(errOut, "sshward: this session is NOT being recorded: the recording disk of this host is full") {
					t.Errorf("staging ran an unrecorded session without telling: stderr %q", errOut)
				}
				want := map[string]string{"key_id": k.cert.KeyId}
				for k, v := range alert {
					want[k] = v
				}
				a.logs.find(t, want)
			})

			t.Run("running session", func(t *testing.T) {
				k := ca.issue(t, c.home, certSpec{tier: tt.tier, keyID: "case spool running " + tt.tier, principals: []string{login}, extensions: tt.ext})
				defer disk.SetFull(false)
				lines, wait := c.stream(t, k, login, "echo started; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo tick $i; sleep 0.1; done; echo finished")
				if l := <-lines; l != "started" {
					t.Fatalf("first line %q", l)
				}
				disk.SetFull(true)
				var got []string
				for l := range lines {
					got = append(got, l)
				}
				errOut, err := wait()
				all := strings.Join(got, "\n")
				if tt.closed {
					if err == nil || strings.Contains(all, "finished") || !strings.Contains(errOut, "cannot record sessions") {
						t.Fatalf("production kept a session it cannot record: %v\nstdout %q\nstderr %q", err, all, errOut)
					}
					if got := exitCode(err); got != ExitRecordingFailed {
						t.Errorf("ended session: ssh exit status %d, want %d; stderr %q", got, ExitRecordingFailed, errOut)
					}
				} else if err != nil || !strings.Contains(all, "finished") {
					t.Fatalf("staging ended a session for its recording: %v %q %q", err, all, errOut)
				}
				want := map[string]string{"key_id": k.cert.KeyId}
				for k, v := range alert {
					want[k] = v
				}
				a.logs.find(t, want)
			})
		})
	}
}

// stream runs ssh and delivers its stdout line by line; wait returns its
// stderr and error once it exits.
func (c *sshClient) stream(t *testing.T, k *userKey, login, remote string) (<-chan string, func() (string, error)) {
	t.Helper()
	return c.streamArgs(t, k, login, nil, remote)
}

// streamArgs is stream with extra ssh options (e.g. -tt).
func (c *sshClient) streamArgs(t *testing.T, k *userKey, login string, extra []string, remote string) (<-chan string, func() (string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, "ssh", append(c.args(k, login, extra...), remote)...)
	cmd.Env = c.env()
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	})
	return lines, func() (string, error) {
		defer cancel()
		wg.Wait()
		err := cmd.Wait()
		return errb.String(), err
	}
}
