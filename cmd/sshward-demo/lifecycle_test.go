package main_test

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoEndsItsChildren: the demo's CA, playback server and agents end
// with it, however it ends: its terminal closing (SIGHUP; SIGINT and
// SIGTERM take the same path), or kill -9, which gives it no chance to
// stop them (the parent-death signal does). The children are in their own process
// group, so a hang-up of the terminal reaches the demo, which stops them
// in order, not all at once.
func TestDemoEndsItsChildren(t *testing.T) {
	bin := binaries(t)
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "demo")
			demo := exec.Command(filepath.Join(bin, "sshward-demo"), "--dir", dir, "--listen", "127.0.0.1:0")
			stdout, err := demo.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			demo.Stderr = &stderr
			if err := demo.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			t.Cleanup(func() {
				demo.Process.Kill()
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
				}
			})
			sc := bufio.NewScanner(stdout)
			for sc.Scan() && !strings.Contains(sc.Text(), "audit verify") {
			}
			go func() {
				for sc.Scan() {
				}
				exited <- demo.Wait()
			}()
			kids := children(t, demo.Process.Pid)
			if len(kids) < 4 { // CA, playback server, two agents
				t.Fatalf("the running demo has %d children %v, want its CA, playback server and agents\n%s", len(kids), kids, stderr.String())
			}
			for _, k := range kids {
				if pgid, err := syscall.Getpgid(k); err != nil || pgid == demo.Process.Pid || pgid != k {
					t.Errorf("child %d is in process group %d (%v), want its own", k, pgid, err)
				}
			}
			if err := demo.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if sig != syscall.SIGKILL {
					if err != nil {
						t.Errorf("demo after %s: %v, want a clean exit\n%s", sig, err, stderr.String())
					}
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the demo did not end within 30s of %s", sig)
			}
			deadline := time.Now().Add(15 * time.Second)
			for {
				var left []int
				for _, k := range kids {
					if alive(k) {
						left = append(left, k)
					}
				}
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					for _, k := range left {
						syscall.Kill(k, syscall.SIGKILL)
					}
					t.Fatalf("after %s of the demo, its children %v still run", sig, left)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
