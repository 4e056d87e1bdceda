package agent

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
)

// TestLoad200Sessions: 200 concurrent recorded sessions (50 connections of
// 4 sessions, x/crypto/ssh's client on loopback), each producing output,
// give 200 complete recordings; afterwards the agent holds no more
// goroutines or file descriptors than before.
func TestLoad200Sessions(t *testing.T) {
	const conns, perConn = 50, 4
	ca := newFakeCA(t)
	// One client dialling 50 connections at once is a burst the per-source
	// pre-auth cap (DefaultMaxStartupsPerSource) would cut: an operator
	// with such clients raises it, as here.
	a := startAgent(t, ca, agentOpts{cfg: func(c *Config) {
		c.LookupUser = testUserLookup(t, t.TempDir())
		c.MaxStartupsPerSource = conns + 1
	}})
	login := currentUser(t)
	k := ca.issue(t, "", certSpec{keyID: "case load", principals: []string{login}, extensions: stagingExt()})
	const command = `i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo "out $i ✓"; done; echo done`
	want := "out 100 ✓\ndone\n"
	recordedWant := strings.ReplaceAll(want, "\n", "\r\n") // no terminal: LF recorded as CR LF

	// Warm up (first use of the spool, poller, DNS-free dial paths), then
	// take the baseline.
	if out, _, err := goSSHRun(t, ca, a, k, login, command); err != nil || !strings.HasSuffix(out, want) {
		t.Fatalf("warm-up: %v %q", err, out)
	}
	waitRecordings(t, a, 1)
	baseG, baseFD := settle(t, 0, 0, false)

	var wg sync.WaitGroup
	errs := make(chan error, conns*perConn)
	start := make(chan struct{})
	for range conns {
		wg.Go(func() {
			<-start
			client, err := goSSHDial(t, ca, a, k, login, nil)
			if err != nil {
				errs <- err
				return
			}
			defer client.Close()
			var sw sync.WaitGroup
			for range perConn {
				sw.Go(func() {
					s, err := client.NewSession()
					if err != nil {
						errs <- err
						return
					}
					defer s.Close()
					out, err := s.Output(command)
					if err != nil || !strings.HasSuffix(string(out), want) {
						errs <- fmt.Errorf("session: %v, output ends %q", err, string(out)[max(0, len(out)-30):])
					}
				})
			}
			sw.Wait()
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	recs := waitRecordings(t, a, 1+conns*perConn)
	complete := 0
	for _, m := range recs {
		if m.Finished && m.Complete && m.BytesOut > 0 {
			complete++
		}
	}
	if complete != 1+conns*perConn {
		t.Errorf("%d complete recordings, want %d", complete, 1+conns*perConn)
	}
	// Spot-check the casts: every one holds the whole output.
	n := 0
	for id := range recs {
		_, evs := readCast(t, castPath(SpoolDir(a.dataDir), id))
		if !strings.HasSuffix(output(evs), recordedWant) {
			t.Errorf("recording %s lacks the end of the output", id)
		}
		if n++; n == 40 {
			break
		}
	}
	settle(t, baseG, baseFD, true)
}

func waitRecordings(t *testing.T, a *testAgent, n int) map[string]recorder.Metadata {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		recs := readRecordings(t, SpoolDir(a.dataDir))
		finished := 0
		for _, m := range recs {
			if m.Finished {
				finished++
			}
		}
		if finished >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d recordings finished", finished, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settle waits (bounded) for goroutines and open fds to come down to the
// baseline, and returns the counts. Without check it only measures.
func settle(t *testing.T, baseG, baseFD int, check bool) (int, int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, fd := runtime.NumGoroutine(), openFDs(t)
		if !check {
			time.Sleep(200 * time.Millisecond) // let the warm-up's goroutines exit
			return runtime.NumGoroutine(), openFDs(t)
		}
		if g <= baseG && fd <= baseFD {
			return g, fd
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("leak: %d goroutines (baseline %d), %d fds (baseline %d)\n%s", g, baseG, fd, baseFD, buf[:n])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(des)
}
