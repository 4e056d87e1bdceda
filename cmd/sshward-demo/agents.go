package main

import (
	"context"

	"fmt"
	"github.com/pquerna/otp/totp"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/sshward/sshward/cmd/internal/netwait"
)

// engineerAccount picks the demo engineer's name. The agent runs sessions
// as the local account named by the certificate principal, so the name must
// exist on this machine: as root the demo creates "alice" and "deploy" (the
// default policy's staging principals); otherwise the engineer is named
// after the current account, the only one a non-root agent may serve.
func (d *demo) engineerAccount() (string, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return "", err
		}
		return u.Username, nil
	}
	for _, name := range []string{"alice", "deploy"} {
		if _, err := user.Lookup(name); err == nil {
			continue
		}
		d.step("creating local account %s for the demo hosts (useradd)", name)
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/bash", name).CombinedOutput(); err != nil {
			return "", fmt.Errorf("useradd %s: %v: %s", name, err, strings.TrimSpace(string(out)))
		}
	}
	return "alice", nil
}

// startAgents joins a staging and a production agent to the CA on loopback.
func (d *demo) startAgents(ctx context.Context, log io.Writer, caDir string, st *state) error {
	hosts := []demoHost{{Name: "web1.staging", Tier: "staging", Labels: "app=web"}, {Name: "db1.prod", Tier: "production", Labels: "app=db"}}
	for i := range hosts {
		h := &hosts[i]
		tok, err := d.output(ctx, "sshward-ca", "join-token", "--dir", caDir, "--host", h.Name, "--tier", h.Tier)
		if err != nil {
			return err
		}
		addr, err := netwait.FreeAddr("127.0.0.1:0")
		if err != nil {
			return err
		}
		h.Addr, h.Data = addr, filepath.Join(d.dir, "agent-"+h.Name)
		tokFile, err := d.tokenFile("join-token-"+h.Name, tok)
		if err != nil {
			return err
		}
		d.step("starting sshward-agent %s (%s) on %s", h.Name, h.Tier, addr)
		if _, err := d.start(ctx, log, "sshward-agent", "--ca", st.CA, "--fingerprint", st.Fingerprint,
			"--join-token-file", tokFile, "--tier", h.Tier, "--data", h.Data, "--listen", addr, "--host-name", h.Name, "--label", h.Labels); err != nil {
			return err
		}
		if err := netwait.TCP(ctx, addr, 20*time.Second); err != nil {
			return fmt.Errorf("agent %s did not come up (see %s/ca.log): %w", h.Name, d.dir, err)
		}
	}
	st.Hosts = hosts
	return nil
}

// writeSSHConfig writes DIR/ssh_config: the Match blocks from
// `sshward ssh-config` first (so they match the name typed, before HostName
// rewrites it), then one Host block per demo agent.
func (d *demo) writeSSHConfig(ctx context.Context, st state) error {
	var b strings.Builder
	eng := st.Users[0].Name
	home := homeOf(st, eng)
	// ssh-config needs a logged-in client only for the tier list; without a
	// session it prints every tier with host patterns.
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	cfg := d.cmd(ctx, "sshward", "ssh-config")
	cfg.Env = append(cfg.Env, "SSHWARD_HOME="+home)
	// Bootstrap the client's trust (root + CA URL) without logging in.
	if err := d.bootstrapClient(ctx, st, home); err != nil {
		return err
	}
	out, err := cfg.Output()
	if err != nil {
		return fmt.Errorf("sshward ssh-config: %w", err)
	}
	b.Write(out)
	b.WriteString("\n# demo hosts on loopback\n")
	for _, h := range st.Hosts {
		host, port, _ := net.SplitHostPort(h.Addr)
		fmt.Fprintf(&b, "Host %s\n    HostName %s\n    Port %s\n    HostKeyAlias %s\n    User %s\n", h.Name, host, port, h.Name, eng)
		if h.Tier == "staging" {
			// web1.staging as web1.ci for the pipeline (journey 6), with the
			// certificate `sshward cert --oidc-token-file` wrote.
			ci := ciHome(st)
			base := strings.TrimSuffix(h.Name, ".staging")
			fmt.Fprintf(&b, "Host %s.ci\n    HostName %s\n    Port %s\n    HostKeyAlias %s\n    User %s\n", base, host, port, h.Name, ciPrincipal(eng))
			fmt.Fprintf(&b, "    CertificateFile %s\n    IdentityFile %s\n    IdentitiesOnly yes\n    UserKnownHostsFile %s\n    StrictHostKeyChecking yes\n",
				filepath.Join(ci, "keys", h.Tier+"-cert.pub"), filepath.Join(ci, "keys", h.Tier), filepath.Join(ci, "known_hosts"))
		}
		if h.Tier != "production" {
			continue
		}
		// db1.prod under other names, so plain ssh picks the on-call tiers
		// (journey 4) by their host patterns.
		base := strings.TrimSuffix(h.Name, ".prod")
		for _, alias := range []string{base + ".oncall", base + ".ro"} {
			fmt.Fprintf(&b, "Host %s\n    HostName %s\n    Port %s\n    HostKeyAlias %s\n    User %s\n", alias, host, port, h.Name, eng)
		}
		// ... and as db1.scoped with whatever production certificate
		// `sshward cert` last wrote, scoped or not (journey 5): no Match
		// block replaces it with an unscoped one.
		fmt.Fprintf(&b, "Host %s.scoped\n    HostName %s\n    Port %s\n    HostKeyAlias %s\n    User %s\n", base, host, port, h.Name, eng)
		fmt.Fprintf(&b, "    CertificateFile %s\n    IdentityFile %s\n    IdentitiesOnly yes\n    UserKnownHostsFile %s\n    StrictHostKeyChecking yes\n",
			filepath.Join(home, "keys", h.Tier+"-cert.pub"), filepath.Join(home, "keys", h.Tier), filepath.Join(home, "known_hosts"))
	}
	return os.WriteFile(filepath.Join(st.Dir, "ssh_config"), []byte(b.String()), 0o644)
}

// bootstrapClient saves the CA URL and root in the engineer's SSHWARD_HOME,
// as `sshward login` would, so ssh-config can run before the first login.
func (d *demo) bootstrapClient(ctx context.Context, st state, home string) error {
	rootPEM, err := os.ReadFile(filepath.Join(st.Dir, "ca", "tls", "root.crt"))
	if err != nil {
		return fmt.Errorf("read CA root: %w", err)
	}
	if err := os.WriteFile(filepath.Join(home, "root.pem"), rootPEM, 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`{"ca": %q, "fingerprint": %q, "user": %q}`+"\n", st.CA, st.Fingerprint, st.Users[0].Name)
	return os.WriteFile(filepath.Join(home, "config.json"), []byte(cfg), 0o600)
}

func (d *demo) output(ctx context.Context, name string, args ...string) (string, error) {
	c := d.cmd(ctx, name, args...)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, args[0], err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func homeOf(st state, user string) string { return filepath.Join(st.Dir, "home-"+user) }

// startPlayback joins a playback server to the CA; agents find it through
// the CA (GET /v1/trust) and ship their recordings there.
func (d *demo) startPlayback(ctx context.Context, log io.Writer, caDir string, st *state) error {
	tok, err := d.output(ctx, "sshward-ca", "join-token", "--dir", caDir, "--playback", "127.0.0.1")
	if err != nil {
		return err
	}
	addr, err := netwait.FreeAddr("127.0.0.1:8444")
	if err != nil {
		return err
	}
	st.Playback = "https://" + addr
	tokFile, err := d.tokenFile("join-token-playback", tok)
	if err != nil {
		return err
	}
	d.step("starting sshward-playback on %s", st.Playback)
	if _, err := d.start(ctx, log, "sshward-playback", "serve", "--dir", filepath.Join(d.dir, "playback"), "--ca", st.CA,
		"--fingerprint", st.Fingerprint, "--join-token-file", tokFile, "--listen", addr); err != nil {
		return err
	}
	return netwait.TCP(ctx, addr, 20*time.Second)
}

// seedRecording runs one short staging session as the engineer (from a
// separate client home, so the reader's own journey starts logged out) so
// that the auditor has something to replay right away.
func (d *demo) seedRecording(ctx context.Context, st state) (int64, error) {
	eng := st.Users[0]
	home := filepath.Join(st.Dir, "home-seed")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return 0, err
	}
	now := time.Now()
	code, err := totp.GenerateCode(eng.TOTP, now)
	if err != nil {
		return 0, err
	}
	login := d.cmd(ctx, "sshward", "login", "--ca", st.CA, "--fingerprint", st.Fingerprint, "--user", eng.Name, "--password-stdin", "--otp", code)
	login.Env = append(login.Env, "SSHWARD_HOME="+home, "SSH_AUTH_SOCK=")
	login.Stdin = strings.NewReader(eng.Password + "\n")
	if out, err := login.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("seed login: %v: %s", err, out)
	}
	cfg, err := os.ReadFile(filepath.Join(st.Dir, "ssh_config"))
	if err != nil {
		return 0, err
	}
	seedCfg := filepath.Join(home, "ssh_config")
	if err := os.WriteFile(seedCfg, []byte(strings.ReplaceAll(string(cfg), homeOf(st, eng.Name), home)), 0o644); err != nil {
		return 0, err
	}
	d.step("recording a first session on web1.staging for the auditor")
	ssh := exec.CommandContext(ctx, "ssh", "-F", seedCfg, "-o", "BatchMode=yes", "web1.staging",
		`echo "hello from the sshward demo"; uname -a; df -h / | tail -1; echo "deploying release 42"`)
	ssh.Env = append(os.Environ(), "SSHWARD_HOME="+home, "SSH_AUTH_SOCK=")
	if out, err := ssh.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("seed session: %v: %s", err, out)
	}
	return now.Unix() / 30, nil
}

// tokenFile writes a one-time join token to a 0600 file in the demo
// directory: tokens never appear on a command line (ps, shell history).
func (d *demo) tokenFile(name, token string) (string, error) {
	path := filepath.Join(d.dir, name)
	if err := os.WriteFile(path, []byte(strings.TrimSpace(token)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return path, nil
}

// ciPrincipal is the login the demo's pipeline gets: deploy when the demo
// could create it (as root), else the account the agents may serve.
func ciPrincipal(engineer string) string {
	if os.Geteuid() == 0 {
		return "deploy"
	}
	return engineer
}
