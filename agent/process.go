package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// stdio is the terminal or the pipes of a session, open before its
// process starts so that the output pumps (and ~/.ssh/rc) can use them.
//
// The agent's ends are pollable (non-blocking) files: a read blocks a
// goroutine, not a thread, and Close interrupts it, which matters when a
// stray process keeps the other end open.
type stdio struct {
	// pty mode
	master  *os.File // agent's end of the terminal
	tty     *os.File // child's end; closed once the process started
	ttyName string

	// pipe mode
	stdin                       *os.File // agent writes
	stdout, stderr              *os.File // agent reads
	childIn, childOut, childErr *os.File
}

func openPTY(req *ptyRequest) (*stdio, error) {
	m, t, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("agent: open pty: %w", err)
	}
	// pty.Open leaves the master blocking (its ioctls call Fd). A
	// non-blocking duplicate becomes a pollable *os.File.
	fd, err := unix.Dup(int(m.Fd()))
	m.Close()
	if err == nil {
		unix.CloseOnExec(fd)
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("agent: open pty: %w", err)
	}
	master := os.NewFile(uintptr(fd), "ptmx")
	st := &stdio{master: master, tty: t, ttyName: t.Name()}
	if err := st.setSize(req.Cols, req.Rows, req.WidthPx, req.HeightPx); err != nil {
		st.closeAll()
		return nil, err
	}
	if len(req.Modes) > 0 {
		tio, err := unix.IoctlGetTermios(int(t.Fd()), unix.TCGETS)
		if err == nil {
			applyTermModes(tio, req.Modes)
			err = unix.IoctlSetTermios(int(t.Fd()), unix.TCSETS, tio)
		}
		if err != nil {
			st.closeAll()
			return nil, fmt.Errorf("agent: set terminal modes: %w", err)
		}
	}
	return st, nil
}

func openPipes() (*stdio, error) {
	st := &stdio{}
	var err error
	if st.childIn, st.stdin, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("agent: pipe: %w", err)
	}
	if st.stdout, st.childOut, err = os.Pipe(); err != nil {
		st.closeAll()
		return nil, fmt.Errorf("agent: pipe: %w", err)
	}
	if st.stderr, st.childErr, err = os.Pipe(); err != nil {
		st.closeAll()
		return nil, fmt.Errorf("agent: pipe: %w", err)
	}
	return st, nil
}

// control runs fn on the master's fd without Fd(), which would make it
// blocking again.
func (st *stdio) control(fn func(fd int) error) error {
	rc, err := st.master.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func (st *stdio) setSize(cols, rows, wpx, hpx int) error {
	ws := &unix.Winsize{Col: uint16(cols), Row: uint16(rows), Xpixel: uint16(wpx), Ypixel: uint16(hpx)}
	if err := st.control(func(fd int) error { return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws) }); err != nil {
		return fmt.Errorf("agent: set terminal size: %w", err)
	}
	return nil
}

// sendBreak sends a break on the terminal (RFC 4335), as tcsendbreak(3).
func (st *stdio) sendBreak() error {
	if st.master == nil {
		return errors.New("agent: break without a terminal")
	}
	return st.control(func(fd int) error { return unix.IoctlSetInt(fd, unix.TCSBRK, 0) })
}

// childFiles are stdin, stdout and stderr of a process.
func (st *stdio) childFiles() (in, out, errOut *os.File) {
	if st.tty != nil {
		return st.tty, st.tty, st.tty
	}
	return st.childIn, st.childOut, st.childErr
}

// closeChildEnds drops the agent's copies of the child's ends, so that
// the agent reads EOF (pipes) or EIO (pty) once the processes are gone.
func (st *stdio) closeChildEnds() {
	for _, f := range []*os.File{st.tty, st.childIn, st.childOut, st.childErr} {
		if f != nil {
			f.Close()
		}
	}
}

func (st *stdio) closeAll() {
	st.closeChildEnds()
	for _, f := range []*os.File{st.master, st.stdin, st.stdout, st.stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// command is what to run and as whom.
type command struct {
	path string   // executable
	args []string // argv, argv[0] included
	env  []string
	dir  string
	user *User
}

// process is a started session process, leader of its own session and
// process group.
type process struct {
	cmd *exec.Cmd
	pid int
}

func startProcess(c command, st *stdio) (*process, error) {
	in, out, errOut := st.childFiles()
	cmd := &exec.Cmd{
		Path: c.path, Args: c.args, Env: c.env, Dir: c.dir,
		Stdin: in, Stdout: out, Stderr: errOut,
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:     true,
			Setctty:    st.tty != nil,
			Ctty:       0, // the child's stdin: the terminal
			Credential: c.user.credential(),
		},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("agent: start %s: %w", c.path, err)
	}
	return &process{cmd: cmd, pid: cmd.Process.Pid}, nil
}

// waitExited blocks until the process exited, without reaping it: its
// pid, and so its process group id, cannot be reused while the group is
// signalled.
func (p *process) waitExited() {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// signalGroup signals every process in the session's process group.
func (p *process) signalGroup(sig syscall.Signal) {
	_ = syscall.Kill(-p.pid, sig)
}

// signal signals the session's main process (RFC 4254 section 6.9).
func (p *process) signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// exitInfo is how a process ended.
type exitInfo struct {
	status *int   // exit status, if it exited
	signal string // RFC 4254 signal name, if killed
	core   bool
}

// reap collects the exit status; call after waitExited.
func (p *process) reap() exitInfo {
	_ = p.cmd.Wait()
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		return exitInfo{signal: signalName(ws.Signal()), core: ws.CoreDump()}
	default:
		code := p.cmd.ProcessState.ExitCode()
		return exitInfo{status: &code}
	}
}

// terminate ends the process group: SIGHUP, as a terminal hangup would,
// then SIGKILL after grace for what ignored it.
func (p *process) terminate(ctx context.Context, exited <-chan struct{}, grace time.Duration) {
	p.signalGroup(syscall.SIGHUP)
	p.signalGroup(syscall.SIGCONT) // stopped jobs cannot act on SIGHUP
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
	case <-ctx.Done():
	}
	p.signalGroup(syscall.SIGKILL)
}
