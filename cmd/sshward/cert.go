package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// renewBefore is how much validity a cert must have left for --ensure to
// keep it (DESIGN: renew silently when < 1 min is left).
const renewBefore = time.Minute

// certResult is the --json output (DESIGN CLI contract: certificate, key
// (paths), serial, principals, valid_before).
type certResult struct {
	Certificate string    `json:"certificate"`
	Key         string    `json:"key"`
	Serial      uint64    `json:"serial"`
	KeyID       string    `json:"key_id"`
	Tier        string    `json:"tier"`
	Principals  []string  `json:"principals"`
	ValidAfter  time.Time `json:"valid_after"`
	ValidBefore time.Time `json:"valid_before"`
	Reused      bool      `json:"reused,omitempty"`
	Agent       bool      `json:"agent"`
	Scope       string    `json:"scope,omitempty"` // scope.go: hosts/labels the certificate is limited to
}

func (e *env) cmdCert(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward cert --tier T [--principal P] [--request ID] [--json] [--ensure]\n       sshward cert --tier T --oidc-token-file F [--ca URL --fingerprint FP] [--json]   (CI pipelines)")
	tier := fs.String("tier", "", "tier to get a certificate for (staging, production, break-glass …)")
	var principals cli.StringList
	fs.Var(&principals, "principal", "ask for only these principals (repeatable; default: all policy grants)")
	reqID := fs.String("request", "", "approved access request id (tiers that need approval)")
	ttl := fs.Duration("ttl", 0, "validity (default: the tier's ttl; at most its max_ttl)")
	ensure := fs.Bool("ensure", false, "keep the current certificate when it has at least a minute left (for ssh_config Match exec)")
	quiet := fs.Bool("quiet", false, "print nothing on success")
	host := fs.String("host", "", "host being connected to (informational, from ssh_config %h)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	var scopeHosts, labels cli.StringList
	fs.Var(&scopeHosts, "scope-host", "scope the certificate to these hosts only (repeatable; --host is the informational ssh_config %h); stock sshd refuses scoped certificates")
	fs.Var(&labels, "label", "scope the certificate to hosts with this label, key=value (repeatable: all must match)")
	tokenFile := fs.String("oidc-token-file", "", "CI pipelines: exchange the OIDC token in this file (or $"+envOIDCToken+") for a short certificate, without a login")
	caURL := fs.String("ca", "", "with --oidc-token-file: CA URL (remembered; default: the one pinned before)")
	fp := fs.String("fingerprint", "", "with --oidc-token-file: SHA-256 fingerprint of the CA root (pinned)")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	_ = host
	if *tokenFile != "" || e.getenv(envOIDCToken) != "" {
		if *reqID != "" || *ensure || len(principals) > 0 || *ttl != 0 || len(scopeHosts) > 0 || len(labels) > 0 {
			return cli.Usagef("--oidc-token-file / $%s takes only --tier, --ca, --fingerprint, --json and --quiet: the policy's rule decides the rest", envOIDCToken)
		}
		if *tier == "" {
			return cli.Usagef("--tier T is required")
		}
		return e.certWorkload(ctx, *tier, *tokenFile, *caURL, *fp, *quiet, *asJSON)
	}
	if *caURL != "" || *fp != "" {
		return cli.Usagef("--ca and --fingerprint go with --oidc-token-file; people pin the CA with sshward login")
	}
	scope, err := cliScope(scopeHosts, labels)
	if err != nil {
		return err
	}
	if *tier == "" {
		return cli.Usagef("--tier T is required")
	}
	h, err := e.home()
	if err != nil {
		return err
	}
	// reuse keeps a usable certificate (--ensure): the common case needs no
	// lock, since the files it reads are only ever replaced whole.
	reuse := func() (bool, error) {
		cert, err := readCert(h.certPath(*tier))
		if err != nil || !e.certUsable(cert, principals) || !h.certMatchesKey(*tier, cert) || cert.CriticalOptions[api.CritScope] != scope.Encode() {
			return false, nil
		}
		if *quiet {
			return true, nil
		}
		return true, e.printCert(h, *tier, cert, *asJSON, true, false)
	}
	if *ensure {
		if ok, err := reuse(); ok || err != nil {
			return err
		}
	}
	// One renewal at a time (renewal.go); whoever waited reuses what the
	// holder wrote.
	unlock, err := h.lockRenewal(ctx, e.stderr)
	if err != nil {
		return err
	}
	defer unlock()
	if *ensure {
		if ok, err := reuse(); ok || err != nil {
			return err
		}
	}
	s, err := h.loadSession()
	if err == nil && !e.now().Before(s.ExpiresAt) {
		err = errors.New("your sshward session expired: run sshward login")
	}
	if err != nil {
		if !*ensure {
			return err
		}
		// Called from ssh_config Match exec: ask on the terminal if there is one.
		if s, err = e.reloginOnTTY(ctx, h); err != nil {
			return err
		}
	}
	c, _, err := h.client(s.Token)
	if err != nil {
		return err
	}
	key, err := h.renewalKey(*tier, e.now(), krlRevokes(ctx, c, *tier))
	if err != nil {
		return err
	}
	sshPub := key.pub
	if !*quiet && !*asJSON {
		fmt.Fprintf(e.stderr, "sshward: fetching a %s certificate…\n", *tier)
	}
	// Under ssh_config's auto-fetch nobody can pass --request: use the
	// newest approved access request for the tier, if there is one.
	id := *reqID
	if *ensure && id == "" && e.needsApproval(ctx, c, *tier) {
		id = e.approvedRequest(ctx, c, *tier)
		switch {
		case id == "" && e.approvalsWaivable(ctx, c, *tier):
			// An approval rule may let this one through (read-only login,
			// scope, business hours): the CA decides.
		case id == "" && *quiet:
			// A tier behind dual control shares host patterns with another
			// (break-glass on production): without an approved request this
			// Match block simply does not apply, silently.
			return cli.ErrSilent
		case id == "":
			return fmt.Errorf("tier %s needs an approved access request: run sshward request --tier %s --reason \"...\"", *tier, *tier)
		case !*quiet:
			fmt.Fprintf(e.stderr, "sshward: using access request %s (single use)\n", id)
		}
	}
	certReq := func() api.CertRequest {
		return api.CertRequest{Tier: *tier, PublicKey: string(ssh.MarshalAuthorizedKey(sshPub)), Principals: principals, TTL: api.Duration(*ttl), RequestID: id,
			Hosts: scope.Hosts, Labels: scope.Labels}
	}
	resp, err := c.Cert(ctx, certReq())
	if api.IsCode(err, api.CodeUnauthenticated) && *ensure {
		if s, err = e.reloginOnTTY(ctx, h); err != nil {
			return err
		}
		c.SetToken(s.Token)
		resp, err = c.Cert(ctx, certReq())
	}
	if err != nil {
		return err
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		return fmt.Errorf("the CA sent an unreadable certificate: %w", err)
	}
	cert, ok := pk.(*ssh.Certificate)
	if !ok || !bytesEqual(cert.Key.Marshal(), sshPub.Marshal()) {
		return errors.New("the CA sent a certificate for another key: refusing it")
	}
	old, _ := readCert(h.certPath(*tier))
	if err := h.saveRenewal(*tier, key, []byte(resp.Certificate)); err != nil {
		return err
	}
	added := e.addToAgent(key.priv, cert, old, *tier)
	if *quiet {
		return nil
	}
	return e.printCert(h, *tier, cert, *asJSON, false, added)
}

// certUsable reports whether a saved cert can be used as is.
func (e *env) certUsable(c *ssh.Certificate, want []string) bool {
	if c.ValidBefore == ssh.CertTimeInfinity {
		return false
	}
	left := time.Unix(int64(c.ValidBefore), 0).Sub(e.now())
	if left < renewBefore || e.now().Before(time.Unix(int64(c.ValidAfter), 0)) {
		return false
	}
	for _, p := range want {
		if !slices.Contains(c.ValidPrincipals, p) {
			return false
		}
	}
	return true
}

// addToAgent loads the key and cert into ssh-agent for exactly the cert's
// remaining lifetime and drops the previous cert of this tier.
func (e *env) addToAgent(priv ed25519.PrivateKey, cert, old *ssh.Certificate, tier string) bool {
	sock := e.getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return false
	}
	conn, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		fmt.Fprintf(e.stderr, "sshward: ssh-agent at SSH_AUTH_SOCK is not reachable (%v); the certificate is in files only\n", err)
		return false
	}
	defer conn.Close()
	ag := agent.NewClient(conn)
	// The new certificate goes in before the old one goes out, so an ssh
	// listing the agent's keys meanwhile always finds one.
	defer func() {
		if old != nil && old.Serial != cert.Serial {
			_ = ag.Remove(old) // gone already if it expired
		}
	}()
	left := time.Unix(int64(cert.ValidBefore), 0).Sub(e.now())
	if left <= 0 {
		return false
	}
	err = ag.Add(agent.AddedKey{PrivateKey: priv, Certificate: cert, Comment: "sshward " + tier + " " + cert.KeyId, LifetimeSecs: uint32(left.Seconds())})
	if err != nil {
		fmt.Fprintf(e.stderr, "sshward: ssh-agent refused the key (%v); the certificate is in files only\n", err)
		return false
	}
	return true
}

func (e *env) printCert(h home, tier string, c *ssh.Certificate, asJSON, reused, agentAdded bool) error {
	res := certResult{
		Certificate: h.certPath(tier), Key: h.keyPath(tier), Serial: c.Serial, KeyID: c.KeyId, Tier: tier,
		Principals: c.ValidPrincipals, ValidAfter: time.Unix(int64(c.ValidAfter), 0).UTC(),
		ValidBefore: time.Unix(int64(c.ValidBefore), 0).UTC(), Reused: reused, Agent: agentAdded,
		Scope: certScopeText(c),
	}
	if asJSON {
		return cli.JSON(e.stdout, res)
	}
	left := res.ValidBefore.Sub(e.now()).Round(time.Second)
	verb := "issued"
	if reused {
		verb = "still valid:"
	}
	fmt.Fprintf(e.stdout, "%s %s certificate for %s, serial %d, valid until %s (%s)\n", verb, tier,
		strings.Join(c.ValidPrincipals, ", "), c.Serial, res.ValidBefore.Local().Format("15:04:05"), left)
	e.printOnCallUntil(c)
	if res.Scope != "" {
		fmt.Fprintf(e.stdout, "  scoped to %s\n", res.Scope)
	}
	fmt.Fprintf(e.stdout, "  key %s\n  cert %s\n", res.Key, res.Certificate)
	if agentAdded {
		fmt.Fprintf(e.stdout, "  added to ssh-agent for %s\n", left)
	}
	return nil
}

// reloginOnTTY logs in again on /dev/tty for the remembered user. Under an
// ssh_config Match exec, stdin/stdout are /dev/null but the terminal is
// still there (NOTES: OpenSSH client behaviour).
func (e *env) reloginOnTTY(ctx context.Context, h home) (*session, error) {
	cfg, err := h.loadConfig()
	if err != nil {
		return nil, err
	}
	if e.tty == nil || cfg.OIDC {
		return nil, errors.New("your sshward session expired: run sshward login")
	}
	t, err := e.tty()
	if err != nil {
		return nil, errors.New("your sshward session expired and there is no terminal to log in: run sshward login")
	}
	t.Close()
	fmt.Fprintf(e.stderr, "sshward: session expired, logging in again as %s\n", cfg.User)
	sub := *e
	sub.stdout = io.Discard
	if err := run(ctx, []string{"login", "--user", cfg.User}, &sub); err != nil {
		return nil, err
	}
	return h.loadSession()
}

func readCert(path string) (*ssh.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, err
	}
	c, ok := pk.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("%s holds no certificate", path)
	}
	return c, nil
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// needsApproval reports whether the CA's policy puts tier behind dual
// control (public trust information; on error, assume it does not and let
// the CA decide).
func (e *env) needsApproval(ctx context.Context, c *client.Client, tier string) bool {
	tr, err := c.Trust(ctx)
	if err != nil {
		return false
	}
	for _, t := range tr.Tiers {
		if t.Name == tier {
			return t.Approvals > 0
		}
	}
	return false
}
