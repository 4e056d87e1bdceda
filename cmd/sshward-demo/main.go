// Command sshward-demo runs the whole sshward system on this machine with
// embedded defaults (`make demo`): a CA with demo users, and prints what to
// type next. It drives the real binaries next to it, exactly as an operator
// would. `sshward-demo code USER` prints a demo user's current TOTP code.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/cmd/internal/netwait"
)

func main() {
	// SIGHUP too: when the terminal of `make demo` closes, the demo stops
	// its servers like on Ctrl-C.
	ctx, stop := cli.SignalContext(syscall.SIGHUP)
	code := cli.Exit("sshward-demo", run(ctx, os.Args[1:]), os.Stderr)
	stop()
	os.Exit(code)
}

// demoUser is one of the people the demo creates (DESIGN.md groups).
type demoUser struct {
	Name     string   `json:"name"`
	Role     string   `json:"role"`
	Groups   []string `json:"groups"`
	Password string   `json:"password"`
	TOTP     string   `json:"totp_secret"`
}

// state is what the demo writes to DIR/demo.json for `sshward-demo code`.
type state struct {
	Dir         string     `json:"dir"`
	CA          string     `json:"ca"`
	Fingerprint string     `json:"fingerprint"`
	Users       []demoUser `json:"users"`
	Hosts       []demoHost `json:"hosts"`
	Playback    string     `json:"playback"`
	// SeedStep is the TOTP time step the demo's seeded session used for the
	// engineer; that code cannot be used again (replay protection), so
	// `sshward-demo code` hands out the next one.
	SeedStep int64 `json:"seed_totp_step,omitempty"`
	// OnCall is the demo's on-call rotation (journey 4).
	OnCall *onCall `json:"oncall,omitempty"`
	// CI is the demo's stand-in CI token issuer (journey 6).
	CI *ciIssuer `json:"ci,omitempty"`
}

// demoHost is an sshward-agent the demo runs on loopback.
type demoHost struct {
	Name   string `json:"name"`
	Labels string `json:"labels"`
	Tier   string `json:"tier"`
	Addr   string `json:"addr"`
	Data   string `json:"data"`
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "code" {
		return cmdCode(args[1:])
	}
	if len(args) > 0 && args[0] == "handover" {
		return cmdHandover(args[1:])
	}
	if len(args) > 0 && args[0] == "ci-token" {
		return cmdCIToken(ctx, args[1:])
	}
	fs := cli.NewFlagSet("sshward-demo [--dir DIR] [--listen ADDR]")
	dir := fs.String("dir", "", "demo directory (default: a new temporary one)")
	listen := fs.String("listen", "127.0.0.1:8443", "CA address (a free port is picked if taken)")
	bin := fs.String("bin", "", "directory with the sshward binaries (default: next to this one)")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*bin = filepath.Dir(exe)
	}
	for _, b := range []string{"sshward-ca", "sshward"} {
		if _, err := os.Stat(filepath.Join(*bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s: run make build first", b, *bin)
		}
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "sshward-demo-")
		if err != nil {
			return err
		}
		*dir = d
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	d := &demo{bin: *bin, dir: *dir, out: os.Stdout}
	return d.run(ctx, *listen)
}

type demo struct {
	bin, dir string
	out      io.Writer
	procs    []*exec.Cmd
}

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

func (d *demo) run(ctx context.Context, listen string) error {
	defer d.stopAll()
	caDir := filepath.Join(d.dir, "ca")
	passFile := filepath.Join(d.dir, "ca-passphrase")
	if err := os.WriteFile(passFile, []byte(randomWord(18)+"\n"), 0o600); err != nil {
		return err
	}
	d.step("creating a CA in %s", caDir)
	var initRes struct {
		Fingerprint string            `json:"fingerprint"`
		UserCA      map[string]string `json:"user_ca"`
		HostCA      string            `json:"host_ca"`
	}
	if err := d.runJSON(ctx, &initRes, "sshward-ca", "init", "--dir", caDir, "--passphrase-file", passFile, "--json"); err != nil {
		return err
	}
	st := state{Dir: d.dir, Fingerprint: initRes.Fingerprint}
	engineer, err := d.engineerAccount()
	if err != nil {
		return err
	}
	people := []demoUser{
		{Name: engineer, Role: "engineer (staging, production with TOTP)", Groups: []string{"engineers", "sre", "oncall"}},
		{Name: "ivan", Role: "incident commander", Groups: []string{"incident-commanders", "engineers"}},
		{Name: "irene", Role: "incident commander", Groups: []string{"incident-commanders", "engineers"}},
		{Name: "audrey", Role: "auditor", Groups: []string{"auditors"}},
	}
	for i := range people {
		u := &people[i]
		u.Password = randomWord(12)
		var res struct {
			TOTPSecret string `json:"totp_secret"`
		}
		d.step("adding user %s (%s)", u.Name, strings.Join(u.Groups, ", "))
		if err := d.runJSONIn(ctx, u.Password+"\n", &res, "sshward-ca", "users", "add", u.Name, "--dir", caDir,
			"--groups", strings.Join(u.Groups, ","), "--totp", "--password-stdin", "--json"); err != nil {
			return err
		}
		u.TOTP = res.TOTPSecret
	}
	st.Users = people
	d.step("putting %s on call until %s UTC (DIR/ca/oncall.yaml)", engineer, time.Now().UTC().Truncate(time.Hour).Add(8*time.Hour).Format("15:04"))
	if st.OnCall, err = setupOnCall(caDir, engineer, time.Now()); err != nil {
		return err
	}
	addr, err := netwait.FreeAddr(listen)
	if err != nil {
		return err
	}
	st.CA = "https://" + addr
	if st.CI, err = startCIIssuer(ctx, st.CA); err != nil {
		return err
	}
	d.step("trusting the demo's CI token issuer %s for pipelines (workload_issuers)", st.CI.URL)
	if err := appendFile(filepath.Join(caDir, "policy.yaml"), st.CI.policy(ciPrincipal(engineer))); err != nil {
		return err
	}
	d.step("starting the CA on %s", st.CA)
	logf, err := os.OpenFile(filepath.Join(d.dir, "ca.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	if _, err := d.start(ctx, logf, "sshward-ca", "serve", "--dir", caDir, "--listen", addr, "--passphrase-file", passFile); err != nil {
		return err
	}
	if err := netwait.HTTPS(ctx, st.CA, 20*time.Second); err != nil {
		return fmt.Errorf("the CA did not come up (see %s): %w", logf.Name(), err)
	}
	if err := d.startPlayback(ctx, logf, caDir, &st); err != nil {
		return err
	}
	if err := d.startAgents(ctx, logf, caDir, &st); err != nil {
		return err
	}
	if err := d.writeSSHConfig(ctx, st); err != nil {
		return err
	}
	if st.SeedStep, err = d.seedRecording(ctx, st); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(d.dir, "demo.json"), b, 0o600); err != nil {
		return err
	}
	d.printNext(st)
	<-ctx.Done()
	d.step("stopping; the demo state stays in %s", d.dir)
	return nil
}

func (d *demo) printNext(st state) {
	w := d.out
	sw := filepath.Join(d.bin, "sshward")
	fmt.Fprintf(w, "\nsshward demo is running. Ctrl-C stops it. Everything lives in %s\n\n", st.Dir)
	fmt.Fprintf(w, "CA          %s\nfingerprint %s\nplayback    %s\n\nusers (passwords and TOTP secrets are demo values):\n", st.CA, st.Fingerprint, st.Playback)
	for _, u := range st.Users {
		fmt.Fprintf(w, "  %-7s %-42s password %s  TOTP %s\n", u.Name, u.Role, u.Password, u.TOTP)
	}
	fmt.Fprintf(w, "\nA user's current TOTP code: %s code %s\n", filepath.Join(d.bin, "sshward-demo"), st.Users[0].Name)
	fmt.Fprintf(w, "\nJourney 1, the engineer (in another terminal):\n")
	eng := st.Users[0].Name
	fmt.Fprintf(w, "  export SSHWARD_HOME=%s\n", homeOf(st, eng))
	fmt.Fprintf(w, "  %s login --ca %s --fingerprint %s --user %s\n", sw, st.CA, st.Fingerprint, eng)
	fmt.Fprintf(w, "      (password %s, then the code from `%s code %s`)\n", st.Users[0].Password, filepath.Join(d.bin, "sshward-demo"), eng)
	fmt.Fprintf(w, "  ssh -F %s/ssh_config web1.staging       # fetches a staging certificate on the fly\n", st.Dir)
	fmt.Fprintf(w, "  ssh -F %s/ssh_config db1.prod           # production: MFA session, 15 min, input recorded\n", st.Dir)
	fmt.Fprintf(w, "  %s status\n  ssh-keygen -L -f $SSHWARD_HOME/keys/production-cert.pub\n", sw)
	fmt.Fprintf(w, "\nJourney 2, break-glass with dual control (%s asks, two incident commanders approve):\n", eng)
	fmt.Fprintf(w, "  %s request --tier break-glass --reason \"INC-4711 db1 disk full\"     # as %s: prints REQ-…\n", sw, eng)
	for _, u := range st.Users {
		if !slices.Contains(u.Groups, "incident-commanders") {
			continue
		}
		fmt.Fprintf(w, "  # as %s, in a terminal of their own (password %s, TOTP from `%s code %s`):\n", u.Name, u.Password, filepath.Join(d.bin, "sshward-demo"), u.Name)
		fmt.Fprintf(w, "  export SSHWARD_HOME=%s; %s login --ca %s --fingerprint %s --user %s\n", homeOf(st, u.Name), sw, st.CA, st.Fingerprint, u.Name)
		fmt.Fprintf(w, "  %s requests; %s approve REQ-…\n", sw, sw)
	}
	fmt.Fprintf(w, "  ssh -F %s/ssh_config root@db1.prod      # as %s again: single use, ≤10 min, input recorded\n", st.Dir, eng)
	if oc := st.OnCall; oc != nil {
		ca := filepath.Join(d.bin, "sshward-ca")
		fmt.Fprintf(w, "\nJourney 4, on call (%s carries the pager until %s UTC, then %s; %s):\n", oc.Members[0], oc.ShiftEnd.Format("15:04"), oc.Members[1], oc.Schedule)
		fmt.Fprintf(w, "  %s oncall --dir %s/ca                  # who is on call, until when\n", ca, st.Dir)
		fmt.Fprintf(w, "  ssh -F %s/ssh_config db1.oncall         # tier oncall-prod: only on call, ends with the shift\n", st.Dir)
		fmt.Fprintf(w, "  %s request --tier prod-ro --reason \"check the queue\"   # approved at once while on call\n", sw)
		fmt.Fprintf(w, "  ssh -F %s/ssh_config db1.ro\n", st.Dir)
		fmt.Fprintf(w, "  %s handover --dir %s    # hand the pager to %s now: the CA revokes %s's on-call\n", filepath.Join(d.bin, "sshward-demo"), st.Dir, oc.Members[1], oc.Members[0])
		fmt.Fprintf(w, "      certificates and ends their live sessions; the next ssh db1.oncall is refused\n")
	}
	fmt.Fprintf(w, "\nJourney 5, need-to-know scope (agents carry labels: db1.prod app=db, web1.staging app=web):\n")
	fmt.Fprintf(w, "  %s cert --tier production --label app=billing   # a certificate for the billing hosts only\n", sw)
	fmt.Fprintf(w, "  ssh -F %s/ssh_config db1.scoped         # refused: db1.prod is outside the certificate's scope\n", st.Dir)
	fmt.Fprintf(w, "  %s cert --tier production --label app=db        # scoped to the database hosts\n", sw)
	fmt.Fprintf(w, "  ssh -F %s/ssh_config db1.scoped         # admitted (db1.scoped uses the last certificate as is)\n", st.Dir)
	if st.CI != nil {
		demoBin := filepath.Join(d.bin, "sshward-demo")
		fmt.Fprintf(w, "\nJourney 6, a pipeline (the demo plays the CI platform at %s; only %s@%s gets in):\n", st.CI.URL, ciRepo, ciRef)
		fmt.Fprintf(w, "  export SSHWARD_HOME=%s SSHWARD_OIDC_TOKEN=$(%s ci-token --dir %s)\n", ciHome(st), demoBin, st.Dir)
		fmt.Fprintf(w, "  %s cert --tier staging --ca %s --fingerprint %s\n", sw, st.CA, st.Fingerprint)
		fmt.Fprintf(w, "  ssh -F %s/ssh_config web1.ci 'echo deployed'   # recorded as ci:%s@%s run=…\n", st.Dir, ciRepo, ciRef)
		fmt.Fprintf(w, "  SSHWARD_OIDC_TOKEN=$(%s ci-token --ref refs/heads/feature --dir %s) %s cert --tier staging   # refused\n", demoBin, st.Dir, sw)
	}
	fmt.Fprintf(w, "\nRecordings land in each agent's spool:\n")
	for _, h := range st.Hosts {
		fmt.Fprintf(w, "  %s status --data %s      # %s (%s) on %s\n", filepath.Join(d.bin, "sshward-agent"), h.Data, h.Name, h.Tier, h.Addr)
	}
	au := st.Users[len(st.Users)-1]
	fmt.Fprintf(w, "\nJourney 3, the auditor: open %s in a browser and log in as %s (password %s,\n", st.Playback, au.Name, au.Password)
	fmt.Fprintf(w, "  TOTP from `%s code %s`); a recorded session is already there. Or in a terminal:\n", filepath.Join(d.bin, "sshward-demo"), au.Name)
	fmt.Fprintf(w, "  export SSHWARD_HOME=%s\n", homeOf(st, au.Name))
	fmt.Fprintf(w, "  %s login --ca %s --fingerprint %s --user %s\n", sw, st.CA, st.Fingerprint, au.Name)
	fmt.Fprintf(w, "  %s sessions        %s sessions --grep uname        %s play ID        %s export ID > s.cast\n", sw, sw, sw, sw)
	fmt.Fprintf(w, "\nAdmin verbs work while the CA runs:\n  %s audit list --dir %s/ca\n  %s audit verify --dir %s/ca\n\n",
		filepath.Join(d.bin, "sshward-ca"), st.Dir, filepath.Join(d.bin, "sshward-ca"), st.Dir)
}

func (d *demo) cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, filepath.Join(d.bin, name), args...)
	c.Env = os.Environ()
	return c
}

func (d *demo) runJSON(ctx context.Context, out any, name string, args ...string) error {
	return d.runJSONIn(ctx, "", out, name, args...)
}

func (d *demo) runJSONIn(ctx context.Context, stdin string, out any, name string, args ...string) error {
	c := d.cmd(ctx, name, args...)
	c.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	b, err := c.Output()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, args[0], err, strings.TrimSpace(stderr.String()))
	}
	return json.Unmarshal(b, out)
}

func (d *demo) start(ctx context.Context, log io.Writer, name string, args ...string) (*exec.Cmd, error) {
	c := d.cmd(context.WithoutCancel(ctx), name, args...)
	c.Stdout, c.Stderr = log, log
	// The servers end with the demo even when it is killed (kill -9, a test's
	// context): nothing is left holding the demo's ports and files. In
	// their own process group, a terminal's ^C or hang-up reaches only the
	// demo, which stops them in order (agents, then playback, then the CA).
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d.procs = append(d.procs, c)
	return c, nil
}

func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		p.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
}

func randomWord(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func cmdCode(args []string) error {
	fs := cli.NewFlagSet("sshward-demo code USER [--dir DIR]")
	dir := fs.String("dir", "", "demo directory (default: the newest one in the temp dir)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cli.Usagef("code needs one USER")
	}
	st, err := loadState(*dir)
	if err != nil {
		return err
	}
	for i, u := range st.Users {
		if u.Name == pos[0] {
			at := time.Now()
			if i == 0 && at.Unix()/30 <= st.SeedStep {
				at = time.Unix((st.SeedStep+1)*30, 0) // accepted: one step of skew
			}
			code, err := totp.GenerateCode(u.TOTP, at)
			if err != nil {
				return err
			}
			fmt.Println(code)
			return nil
		}
	}
	return fmt.Errorf("no demo user %q", pos[0])
}

// loadState reads DIR/demo.json; an empty dir means the newest demo in the
// temp dir.
func loadState(dir string) (*state, error) {
	if dir == "" {
		m, _ := filepath.Glob(filepath.Join(os.TempDir(), "sshward-demo-*", "demo.json"))
		var newest time.Time
		for _, f := range m {
			if fi, err := os.Stat(f); err == nil && fi.ModTime().After(newest) {
				newest, dir = fi.ModTime(), filepath.Dir(f)
			}
		}
		if dir == "" {
			return nil, errors.New("no running demo found: start one with make demo")
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "demo.json"))
	if err != nil {
		return nil, fmt.Errorf("no demo in %s: %w", dir, err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, "demo.json"), err)
	}
	return &st, nil
}
