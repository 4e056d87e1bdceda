package plugins

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sshward/sshward/plugins/contract"
)

// Client is the host's handle on one plugin binary. It implements Notifier
// (Kind notifier) and contract.ApprovalPolicy (Kind approval); the method of the
// other kind returns ErrWrongKind.
//
// The process is started by Load and restarted on the first call after it
// died: a crash or kill mid-call fails that call at once with
// ErrUnavailable (the connection breaks), the next call starts a fresh
// process (its SHA-256 checked again). Repeated failures back off
// exponentially (Config.RestartBackoff … MaxRestartBackoff); calls inside
// the wait fail fast instead of queueing. A Client is safe for concurrent
// use.
type Client struct {
	cfg     Config
	sum     []byte
	sockDir string // PLUGIN_UNIX_SOCKET_DIR: ours, so a killed plugin's socket does not litter $TMPDIR
	life    context.Context
	stop    context.CancelFunc

	mu       sync.Mutex    // guards the fields below
	proc     *process      // the running process; nil when none
	starting chan struct{} // closed when the start in progress ends; nil when none
	failures int           // crashes and failed starts since the last answered call
	retryAt  time.Time     // no start before this
	lastErr  error         // why the last process died or did not start
	closed   bool

	bg sync.WaitGroup // starts and kills running in the background
}

// process is one running plugin process.
type process struct {
	pc   *plugin.Client
	stub stub
	pid  string
}

// Load checks cfg and the binary's SHA-256, starts the plugin and checks
// that it serves cfg.Kind. The returned Client owns the process until
// Close. ctx bounds only this first start.
func Load(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	sum, _ := parseSHA256(cfg.SHA256) // checked by Check
	if err := verifyBinary(cfg.Path, sum); err != nil {
		return nil, &Error{Plugin: cfg.Name, Op: "start", Err: err}
	}
	dir, err := os.MkdirTemp("", "sshward-plugin-")
	if err != nil {
		return nil, &Error{Plugin: cfg.Name, Op: "start", Err: err}
	}
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	c := &Client{cfg: cfg, sum: sum, sockDir: dir, life: life, stop: stop}
	if _, err := c.get(ctx); err != nil {
		c.mu.Lock()
		if c.lastErr != nil {
			err = c.lastErr // the start's own error reads better than "unavailable"
		}
		c.mu.Unlock()
		c.Close()
		return nil, &Error{Plugin: cfg.Name, Op: "start", Err: err}
	}
	return c, nil
}

// Name is Config.Name.
func (c *Client) Name() string { return c.cfg.Name }

// Kind is Config.Kind.
func (c *Client) Kind() Kind { return c.cfg.Kind }

// Notify delivers ev to a notifier plugin.
func (c *Client) Notify(ctx context.Context, ev contract.AuditEvent) error {
	if c.cfg.Kind != KindNotifier {
		return &Error{Plugin: c.cfg.Name, Op: "notify", Err: ErrWrongKind}
	}
	return c.call(ctx, "notify", func(ctx context.Context, s stub) error { return s.notify(ctx, ev) })
}

// Review asks an approval plugin about r. Any error means the plugin did
// not decide, and the caller must deny (fail closed).
func (c *Client) Review(ctx context.Context, r contract.AccessRequestInfo) (contract.PolicyDecision, error) {
	if c.cfg.Kind != KindApproval {
		return contract.PolicyDecision{}, &Error{Plugin: c.cfg.Name, Op: "review", Err: ErrWrongKind}
	}
	var d contract.PolicyDecision
	err := c.call(ctx, "review", func(ctx context.Context, s stub) error {
		var err error
		d, err = s.review(ctx, r)
		return err
	})
	if err != nil {
		return contract.PolicyDecision{}, err
	}
	if d.Deny && d.Reason == "" {
		d.Reason = "denied by approval plugin " + c.cfg.Name
	}
	return d, nil
}

// Close stops the plugin process and waits for it to exit. Calls after
// Close return ErrClosed. Safe to call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	p := c.proc
	c.proc = nil
	c.mu.Unlock()
	c.stop()
	if p != nil {
		p.pc.Kill()
	}
	c.bg.Wait() // a start in progress kills what it started once it sees closed
	if err := os.RemoveAll(c.sockDir); err != nil {
		return fmt.Errorf("plugins: %s: close: %w", c.cfg.Name, err)
	}
	return nil
}

// CleanupClients kills every plugin process any Client started (go-plugin's
// managed clients). Defer it once in main, after the Clients' Close: it is
// the safety net for processes a panic or an early return left behind.
// (go-plugin keeps each managed client in a process-wide list until then,
// so every restart adds an entry: bounded by the restart backoff.)
func CleanupClients() { plugin.CleanupClients() }

// call runs fn against a live process and sorts its failure: the caller's
// own cancellation, the plugin's error (process kept), a protocol
// violation (kept), or a dead or hung process (discarded, restarted later).
func (c *Client) call(ctx context.Context, op string, fn func(context.Context, stub) error) error {
	p, err := c.get(ctx)
	if err != nil {
		return &Error{Plugin: c.cfg.Name, Op: op, Err: err}
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	err = fn(cctx, p.stub)
	if err == nil {
		c.answered(p)
		return nil
	}
	if ctx.Err() != nil {
		// The caller gave up; gRPC carried the cancellation to the plugin,
		// which is not at fault.
		return &Error{Plugin: c.cfg.Name, Op: op, Err: context.Cause(ctx)}
	}
	st, ok := status.FromError(err)
	if !ok { // our side refused the answer (DecodeDecision)
		c.answered(p)
		return &Error{Plugin: c.cfg.Name, Op: op, Err: err}
	}
	switch st.Code() {
	case codes.Unknown:
		c.answered(p)
		return &Error{Plugin: c.cfg.Name, Op: op, Err: fmt.Errorf("%w: %s", ErrPlugin, st.Message())}
	case codes.InvalidArgument, codes.Unimplemented, codes.Internal:
		c.answered(p)
		return &Error{Plugin: c.cfg.Name, Op: op, Err: fmt.Errorf("%w: %s: %s", ErrProtocol, st.Code(), st.Message())}
	}
	why := err
	if st.Code() == codes.DeadlineExceeded {
		// The plugin saw the deadline (gRPC sends it along) and may answer
		// before our own timer fires: whose deadline was it?
		mine, _ := cctx.Deadline()
		if theirs, ok := ctx.Deadline(); ok && !theirs.After(mine) {
			return &Error{Plugin: c.cfg.Name, Op: op, Err: context.DeadlineExceeded}
		}
		why = fmt.Errorf("no answer within %s", c.cfg.CallTimeout)
	}
	c.discard(p, why)
	return &Error{Plugin: c.cfg.Name, Op: op, Err: fmt.Errorf("%w: %v", ErrUnavailable, why)}
}

// get returns the running process, starting one when there is none and the
// backoff allows. It attempts at most one start per call.
func (c *Client) get(ctx context.Context) (*process, error) {
	waited := false
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if p := c.proc; p != nil {
			if !p.pc.Exited() {
				c.mu.Unlock()
				return p, nil
			}
			c.discardLocked(p, errors.New("the plugin process exited"))
		}
		if waited {
			err := c.unavailableLocked()
			c.mu.Unlock()
			return nil, err
		}
		if c.starting == nil {
			if c.cfg.Now().Before(c.retryAt) {
				err := c.unavailableLocked()
				c.mu.Unlock()
				return nil, err
			}
			c.starting = make(chan struct{})
			c.bg.Add(1)
			go c.start(c.starting)
		}
		ch := c.starting
		c.mu.Unlock()
		select {
		case <-ch:
			waited = true
		case <-ctx.Done():
			// The start goes on in the background and serves later calls.
			return nil, context.Cause(ctx)
		}
	}
}

// start launches a process and installs it; it runs on its own goroutine
// so that a caller's ctx can end the wait without abandoning the process.
func (c *Client) start(done chan struct{}) {
	defer c.bg.Done()
	p, err := c.launch()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.starting = nil
	close(done)
	switch {
	case err != nil:
		c.failedLocked(err)
	case c.closed:
		c.bg.Add(1)
		go func() { defer c.bg.Done(); p.pc.Kill() }()
	default:
		c.proc = p
		c.cfg.Logger.Info("plugin started", "plugin", c.cfg.Name, "kind", string(c.cfg.Kind), "pid", p.pid)
	}
}

// launch starts the plugin process, completes go-plugin's handshake and
// asks the plugin which contract it serves.
func (c *Client) launch() (*process, error) {
	cmd := exec.Command(c.cfg.Path, c.cfg.Args...)
	cmd.Env = append(append([]string(nil), c.cfg.Env...), plugin.EnvUnixSocketDir+"="+c.sockDir)
	stderr := new(tail)
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake(),
		Plugins:          plugin.PluginSet{string(c.cfg.Kind): &grpcPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		// A fresh hash.Hash per start: SecureConfig.Check writes into it.
		SecureConfig: &plugin.SecureConfig{Checksum: c.sum, Hash: sha256.New()},
		Managed:      true,
		// The CA's environment may hold its passphrase: the plugin gets Env only.
		SkipHostEnv:  true,
		StartTimeout: c.cfg.StartTimeout,
		Stderr:       stderr,
		Logger:       hclogFor(c.cfg.Logger, c.cfg.Name),
	})
	rpc, err := pc.Client()
	if err != nil {
		pc.Kill()
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			// Replaced since Load verified it.
			return nil, verifyBinary(c.cfg.Path, c.sum)
		}
		return nil, fmt.Errorf("start %s: %v%s", c.cfg.Path, err, stderr)
	}
	raw, err := rpc.Dispense(string(c.cfg.Kind))
	if err != nil {
		pc.Kill()
		return nil, fmt.Errorf("start %s: %w", c.cfg.Path, err)
	}
	s := raw.(stub)
	ctx, cancel := context.WithTimeout(c.life, c.cfg.StartTimeout)
	defer cancel()
	kind, err := s.info(ctx)
	if err != nil {
		pc.Kill()
		return nil, fmt.Errorf("start %s: ask the plugin its kind: %v%s", c.cfg.Path, err, stderr)
	}
	if kind != c.cfg.Kind {
		pc.Kill()
		return nil, fmt.Errorf("%s serves the %s contract but is configured as %s: %w", c.cfg.Path, kind, c.cfg.Kind, ErrWrongKind)
	}
	return &process{pc: pc, stub: s, pid: pc.ID()}, nil
}

// answered notes that p answered a call: the restart backoff starts over.
func (c *Client) answered(p *process) {
	c.mu.Lock()
	if c.proc == p {
		c.failures = 0
	}
	c.mu.Unlock()
}

// discard drops a dead or hung process; the next call starts another.
func (c *Client) discard(p *process, why error) {
	c.mu.Lock()
	c.discardLocked(p, why)
	c.mu.Unlock()
}

func (c *Client) discardLocked(p *process, why error) {
	if c.proc != p {
		return // another caller saw it first
	}
	c.proc = nil
	c.cfg.Logger.Warn("plugin process lost; restarting it on the next call", "plugin", c.cfg.Name, "pid", p.pid, "err", why)
	c.failedLocked(why)
	// Kill waits up to 2 s for a graceful exit of a hung process: not on
	// the caller's time.
	c.bg.Add(1)
	go func() { defer c.bg.Done(); p.pc.Kill() }()
}

// failedLocked counts a crash or failed start and sets the backoff: the
// first restart is immediate, then RestartBackoff doubling up to
// MaxRestartBackoff.
func (c *Client) failedLocked(err error) {
	c.failures++
	c.lastErr = err
	wait := time.Duration(0)
	if c.failures > 1 {
		wait = c.cfg.RestartBackoff
		for i := 2; i < c.failures && wait < c.cfg.MaxRestartBackoff; i++ {
			wait *= 2
		}
		wait = min(wait, c.cfg.MaxRestartBackoff)
	}
	c.retryAt = c.cfg.Now().Add(wait)
}

func (c *Client) unavailableLocked() error {
	if c.lastErr == nil {
		c.lastErr = errors.New("not running")
	}
	wait := c.retryAt.Sub(c.cfg.Now())
	if wait > 0 {
		return fmt.Errorf("%w (next start in %s): %w", ErrUnavailable, wait.Round(time.Millisecond), c.lastErr)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, c.lastErr)
}

// verifyBinary compares the file's SHA-256 with the pinned one, naming
// both so that an operator can tell a stale pin from a replaced binary.
func verifyBinary(path string, want []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("plugin binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("plugin binary %s: %w", path, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("%w: %s has SHA-256 %s but the configuration pins %s; if the binary is the one you meant to install, put its sha256sum in the config",
			ErrChecksum, path, hex.EncodeToString(got), hex.EncodeToString(want))
	}
	return nil
}
