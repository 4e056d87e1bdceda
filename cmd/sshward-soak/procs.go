package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sshward/sshward/cmd/internal/netwait"
)

// proc is one server process of the system, started again after a fault
// with the arguments args returns for that start.
type proc struct {
	name  string
	path  string
	args  func(first bool) []string
	env   []string
	netns string // run inside this network namespace (ip netns exec)
	log   string // stdout and stderr, appended across restarts
	ready func(ctx context.Context) error

	mu      sync.Mutex // guards the fields below
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd exited
	started int
}

// start runs the process and waits until it is ready.
func (p *proc) start(ctx context.Context) error {
	p.mu.Lock()
	first := p.started == 0
	p.started++
	argv := append([]string{p.path}, p.args(first)...)
	if p.netns != "" {
		argv = append([]string{"ip", "netns", "exec", p.netns}, argv...)
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	fmt.Fprintf(logf, "---- soak: start %d of %s at %s\n", p.started, p.name, time.Now().UTC().Format(time.RFC3339Nano))
	// Not CommandContext: a fault kills it on purpose, the soak stops it in
	// order at the end; Pdeathsig ends it with the soak when the soak is killed.
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.mu.Unlock()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	if err := p.ready(ctx); err != nil {
		return fmt.Errorf("%s did not come up (see %s): %w", p.name, p.log, err)
	}
	return nil
}

// signal sends sig and waits (bounded) for the process to exit; after the
// bound it is killed.
func (p *proc) signal(sig syscall.Signal, wait time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		cmd.Process.Kill()
		<-done
	}
}

// kill9 is the fault: SIGKILL, no chance to flush or close anything.
func (p *proc) kill9() { p.signal(syscall.SIGKILL, 10*time.Second) }

// stop ends the process in order (SIGTERM, then SIGKILL after 15 s).
func (p *proc) stop() { p.signal(syscall.SIGTERM, 15*time.Second) }

// running reports whether the process is up (not exited).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// readyHTTPS and readyTCP are proc.ready functions: a restart may take a
// while on a loaded machine.
func readyHTTPS(base string) func(context.Context) error {
	return func(ctx context.Context) error { return netwait.HTTPS(ctx, base, 60*time.Second) }
}

func readyTCP(addr string) func(context.Context) error {
	return func(ctx context.Context) error { return netwait.TCP(ctx, addr, 60*time.Second) }
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// runner runs the sshward command-line tools, each person in their own
// $SSHWARD_HOME.
type runner struct {
	bin string
	env []string
}

// run runs bin/name with args; err carries its exit status and stderr.
func (r *runner) run(ctx context.Context, home, stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin+"/"+name, args...)
	cmd.Env = append(append(os.Environ(), r.env...), "SSHWARD_HOME="+home, "SSH_AUTH_SOCK=")
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), fmt.Errorf("%s %s: %w: %s", name, args[0], err, strings.TrimSpace(e.String()))
	}
	return o.String(), nil
}

// command runs a system tool (ip, mount) and says what failed.
func command(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
