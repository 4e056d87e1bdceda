package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/sshward/sshward/cmd/internal/netwait"
)

// person is one account the soak creates in the CA.
type person struct {
	name, groups, password, totp string
	home                         string

	mu       sync.Mutex // guards lastStep
	lastStep int64      // TOTP time step last used (codes are single use)
}

// system is the running sshward installation the soak loads and breaks.
type system struct {
	dir      string
	ip       string // address every server listens on (the namespace's peer when there is one)
	login    string // unix login sessions run as (principal)
	caURL    string
	fp       string
	caDir    string
	pbDir    string
	pbURL    string
	run      *runner
	ca       *proc
	playback *proc
	agents   []*agent
	workers  []*person
	approver []*person
	auditor  *person
	net      *netns   // nil: no network cut here
	tmpfs    string   // agent data dir on a tmpfs ("" when not root)
	notes    []string // faults dropped and why
}

// agent is one sshward-agent host.
type agent struct {
	*proc
	host, addr, data string
	tmpfs            bool // data dir on the soak's small tmpfs (disk-full fault)
	inNetns          bool // in the network namespace (network-cut fault)
}

func secret(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

// setup makes the CA, its people, the playback server and the agents, and
// logs everyone in.
func setup(ctx context.Context, cfg config, status func(string, ...any)) (*system, error) {
	s := &system{dir: cfg.Dir, ip: "127.0.0.1"}
	s.run = &runner{bin: cfg.Bin, env: []string{"SSHWARD_CA_PASSPHRASE=" + secret(24)}}
	if err := os.MkdirAll(filepath.Join(s.dir, "logs"), 0o700); err != nil {
		return nil, err
	}
	root := os.Geteuid() == 0
	s.login = "root"
	if !root {
		u, err := user.Current()
		if err != nil {
			return nil, err
		}
		s.login = u.Username
	}
	if want(cfg, faultNetCut) {
		if !root {
			s.note("%s dropped: a network namespace needs root", faultNetCut)
		} else if n, err := newNetns(ctx); err != nil {
			s.note("%s dropped: %v", faultNetCut, err)
		} else {
			s.net, s.ip = n, n.hostIP
		}
	}
	s.caDir = filepath.Join(s.dir, "ca")
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	out, err := s.run.run(ctx, "", "", "sshward-ca", "init", "--dir", s.caDir, "--tls-name", s.ip, "--json")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(out), &initRes); err != nil {
		return s, fmt.Errorf("sshward-ca init --json: %w", err)
	}
	s.fp = initRes.Fingerprint
	if err := s.policyPrincipals(); err != nil {
		return s, err
	}
	for i := range cfg.Sessions {
		s.workers = append(s.workers, &person{name: fmt.Sprintf("sre%d", i+1), groups: "sre,oncall"})
	}
	s.approver = []*person{{name: "ivan", groups: "incident-commanders"}, {name: "irene", groups: "incident-commanders"}}
	s.auditor = &person{name: "audrey", groups: "auditors"}
	for _, p := range s.people() {
		p.password, p.home = secret(16), filepath.Join(s.dir, "home-"+p.name)
		args := []string{"users", "add", p.name, "--dir", s.caDir, "--groups", p.groups, "--password-stdin", "--json"}
		if p != s.auditor {
			args = append(args, "--totp")
		}
		out, err := s.run.run(ctx, "", p.password+"\n", "sshward-ca", args...)
		if err != nil {
			return s, err
		}
		var res struct {
			TOTPSecret string `json:"totp_secret"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return s, fmt.Errorf("users add --json: %w", err)
		}
		p.totp = res.TOTPSecret
	}

	caAddr, err := netwait.FreeAddr(net.JoinHostPort(s.ip, "0"))
	if err != nil {
		return s, err
	}
	s.caURL = "https://" + caAddr
	s.ca = &proc{name: "sshward-ca", path: filepath.Join(cfg.Bin, "sshward-ca"), env: s.run.env, log: filepath.Join(s.dir, "logs", "ca.log"),
		args:  func(bool) []string { return []string{"serve", "--dir", s.caDir, "--listen", caAddr} },
		ready: readyHTTPS(s.caURL)}
	status("starting the CA on %s", s.caURL)
	if err := s.ca.start(ctx); err != nil {
		return s, err
	}

	pbAddr, err := netwait.FreeAddr(net.JoinHostPort(s.ip, "0"))
	if err != nil {
		return s, err
	}
	s.pbURL, s.pbDir = "https://"+pbAddr, filepath.Join(s.dir, "playback")
	tokFile, err := s.joinToken(ctx, "playback", "--playback", s.ip)
	if err != nil {
		return s, err
	}
	s.playback = &proc{name: "sshward-playback", path: filepath.Join(cfg.Bin, "sshward-playback"), log: filepath.Join(s.dir, "logs", "playback.log"),
		args: func(first bool) []string {
			a := []string{"serve", "--dir", s.pbDir, "--listen", pbAddr, "--advertise", s.pbURL}
			if first {
				a = append(a, "--ca", s.caURL, "--fingerprint", s.fp, "--join-token-file", tokFile)
			}
			return a
		},
		ready: readyHTTPS(s.pbURL)}
	status("starting the playback server on %s", s.pbURL)
	if err := s.playback.start(ctx); err != nil {
		return s, err
	}

	if want(cfg, faultDiskFull) && !root {
		s.note("%s dropped: mounting a tmpfs needs root", faultDiskFull)
	}
	for i := range cfg.Agents {
		a := &agent{host: fmt.Sprintf("db%d.prod", i+1)}
		a.data = filepath.Join(s.dir, "agent-"+a.host)
		if err := os.MkdirAll(a.data, 0o700); err != nil {
			return s, err
		}
		ip := s.ip
		switch {
		case i == 0 && root && want(cfg, faultDiskFull):
			// A small tmpfs: the disk-full fault fills it for real (ENOSPC).
			if err := command(ctx, "mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", a.data); err != nil {
				s.note("%s dropped: %v", faultDiskFull, err)
				break
			}
			s.tmpfs, a.tmpfs = a.data, true
		case i == 1 && s.net != nil:
			a.inNetns, ip = true, s.net.nsIP
		}
		if a.addr, err = netwait.FreeAddr(net.JoinHostPort(s.ip, "0")); err != nil {
			return s, err
		}
		if a.inNetns { // the port was free on the host side; any port is free in the new namespace
			_, port, _ := strings.Cut(a.addr, ":")
			a.addr = ip + ":" + port
		}
		tok, err := s.joinToken(ctx, a.host, "--host", a.host, "--tier", "production")
		if err != nil {
			return s, err
		}
		a.proc = &proc{name: "sshward-agent " + a.host, path: filepath.Join(cfg.Bin, "sshward-agent"),
			log: filepath.Join(s.dir, "logs", "agent-"+a.host+".log"), ready: readyTCP(a.addr),
			args: func(first bool) []string {
				args := []string{"--ca", s.caURL, "--data", a.data, "--listen", a.addr, "--host-name", a.host, "--tier", "production"}
				if first {
					args = append(args, "--fingerprint", s.fp, "--join-token-file", tok)
				}
				return args
			}}
		if a.inNetns {
			a.proc.netns = s.net.name
		}
		where := ""
		if a.tmpfs {
			where = " (data on a 48 MiB tmpfs)"
		}
		if a.inNetns {
			where = " (in network namespace " + s.net.name + ")"
		}
		status("starting sshward-agent %s on %s%s", a.host, a.addr, where)
		if err := a.start(ctx); err != nil {
			return s, err
		}
		s.agents = append(s.agents, a)
	}
	for _, p := range s.people() {
		if err := s.loginPerson(ctx, p); err != nil {
			return s, err
		}
	}
	return s, nil
}

func (s *system) note(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

func (s *system) people() []*person {
	return append(append(append([]*person{}, s.workers...), s.approver...), s.auditor)
}

// policyPrincipals lets production and break-glass certificates log in as
// the account sessions run as here (root in CI): the default policy maps sre
// to "{{user}}" and oncall to root, and the soak's people have no local
// accounts.
func (s *system) policyPrincipals() error {
	p := filepath.Join(s.caDir, "policy.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	pol := string(b)
	for old, repl := range map[string]string{
		`sre: ["{{user}}"]`: fmt.Sprintf(`sre: [%q]`, s.login),
		`oncall: [root]`:    fmt.Sprintf(`oncall: [%q]`, s.login),
	} {
		if !strings.Contains(pol, old) {
			return fmt.Errorf("the default policy has no %s line (the soak maps it to %s)", old, s.login)
		}
		pol = strings.Replace(pol, old, repl, 1)
	}
	return os.WriteFile(p, []byte(pol), 0o600)
}

// joinToken writes a one-time join token to a 0600 file and returns its path.
func (s *system) joinToken(ctx context.Context, name string, args ...string) (string, error) {
	tok, err := s.run.run(ctx, "", "", "sshward-ca", append([]string{"join-token", "--dir", s.caDir}, args...)...)
	if err != nil {
		return "", err
	}
	path := filepath.Join(s.dir, "join-token-"+name)
	return path, os.WriteFile(path, []byte(strings.TrimSpace(tok)+"\n"), 0o600)
}

// loginPerson runs sshward login with the password and a TOTP code of a
// time step not used before (the CA refuses a replayed code).
func (s *system) loginPerson(ctx context.Context, p *person) error {
	args := []string{"login", "--ca", s.caURL, "--fingerprint", s.fp, "--user", p.name, "--password-stdin"}
	if p.totp != "" {
		p.mu.Lock()
		defer p.mu.Unlock()
		now := time.Now()
		step := now.Unix() / 30
		if step <= p.lastStep {
			// The next window: the CA accepts a code one step ahead.
			step = p.lastStep + 1
			if step > now.Unix()/30+1 {
				return fmt.Errorf("login %s: no unused TOTP code before %s", p.name, time.Unix((step-1)*30, 0).Format(time.TimeOnly))
			}
		}
		code, err := totp.GenerateCode(p.totp, time.Unix(step*30, 0))
		if err != nil {
			return err
		}
		p.lastStep = step
		args = append(args, "--otp", code)
	}
	_, err := s.run.run(ctx, p.home, p.password+"\n", "sshward", args...)
	return err
}

// stopAll stops the servers in order: agents (they finish and ship what
// they hold), then playback, then the CA.
func (s *system) stopAll() {
	for _, a := range s.agents {
		a.stop()
	}
	if s.playback != nil {
		s.playback.stop()
	}
	if s.ca != nil {
		s.ca.stop()
	}
}

// cleanup undoes what setup did to the machine (tmpfs, namespace).
func (s *system) cleanup(ctx context.Context) {
	if s.tmpfs != "" {
		if err := command(ctx, "umount", s.tmpfs); err != nil {
			command(ctx, "umount", "-l", s.tmpfs)
		}
	}
	if s.net != nil {
		s.net.remove(ctx)
	}
}
