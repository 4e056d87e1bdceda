package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/identity/oidcflow"
	"github.com/sshward/sshward/cmd/internal/cli"
)

func (e *env) cmdLogin(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward login --ca URL --fingerprint FP [--user NAME --password-stdin [--otp CODE]] [--oidc]")
	caURL := fs.String("ca", "", "CA URL, e.g. https://ca.example.com:8443, or its replicas' URLs comma-separated (remembered; fails over between them)")
	fp := fs.String("fingerprint", "", "SHA-256 fingerprint of the CA root, from your admin (pinned; never trusted on first use)")
	user := fs.String("user", "", "local CA user name")
	pwStdin := fs.Bool("password-stdin", false, "read the password from the first line of stdin")
	otp := fs.String("otp", "", "current TOTP code")
	useOIDC := fs.Bool("oidc", false, "log in through the CA's OpenID Connect provider (browser)")
	device := fs.Bool("device", false, "with --oidc: use the device flow (for machines without a browser)")
	wantMFA := fs.Bool("mfa", false, "with --oidc: also ask for the CA's mfa_scopes, which the provider grants only after a second factor")
	timeout := fs.Duration("timeout", 5*time.Minute, "with --oidc: how long to wait for the identity provider")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if (*wantMFA || *device) && !*useOIDC {
		return cli.Usagef("--mfa and --device go with --oidc")
	}
	if *timeout <= 0 {
		return cli.Usagef("--timeout must be positive")
	}
	h, err := e.home()
	if err != nil {
		return err
	}
	c, cfg, saved, err := pinCA(h, *caURL, *fp)
	if err != nil {
		return err
	}
	cfg.User, cfg.OIDC = *user, *useOIDC
	if saved != nil && cfg.User == "" && !*useOIDC {
		cfg.User = saved.User
	}
	var resp *api.LoginResponse
	if *useOIDC {
		resp, err = e.loginOIDC(ctx, c, oidcLogin{device: *device, mfa: *wantMFA, timeout: *timeout})
	} else {
		resp, err = e.loginPassword(ctx, c, cfg.User, *pwStdin, *otp)
	}
	if err != nil {
		return err
	}
	if cfg.User == "" {
		cfg.User = resp.User
	}
	// The trust bundle names the CA replicas (remembered beside the pinned
	// root, which alone decides whom to trust) and the host CA line of the
	// ssh-config block; both best effort.
	tr, trErr := c.Trust(ctx)
	if trErr == nil {
		cfg.CAReplicas = learnedReplicas(cfg.CA, tr.CAReplicas)
	} else if saved != nil && saved.CA == cfg.CA {
		cfg.CAReplicas = saved.CAReplicas
	}
	if err := writeAtomic(h.rootPath(), c.RootPEM(), 0o644); err != nil {
		return err
	}
	if err := writeJSON(h.configPath(), cfg); err != nil {
		return err
	}
	sess := session{Token: resp.Token, User: resp.User, Groups: resp.Groups, MFA: resp.MFA, ExpiresAt: resp.ExpiresAt}
	if err := writeJSON(h.sessionPath(), sess); err != nil {
		return err
	}
	if trErr == nil {
		_ = h.writeKnownHosts(tr)
	}
	if *asJSON {
		return cli.JSON(e.stdout, map[string]any{"user": resp.User, "groups": resp.Groups, "mfa": resp.MFA, "expires_at": resp.ExpiresAt})
	}
	mfa := "no"
	if resp.MFA {
		mfa = "yes"
	}
	fmt.Fprintf(e.stdout, "logged in to %s as %s (groups: %s; MFA: %s); session valid until %s\n",
		cfg.CA, resp.User, strings.Join(resp.Groups, ", "), mfa, resp.ExpiresAt.Local().Format("Mon 15:04"))
	fmt.Fprintln(e.stdout, "next: sshward cert --tier TIER, or add `sshward ssh-config` to ~/.ssh/config and use plain ssh")
	return nil
}

// learnedReplicas is the bundle's CA replicas that --ca did not name.
func learnedReplicas(given string, bundle []string) []string {
	have, _ := client.SplitURLs(given)
	var out []string
	for _, u := range bundle {
		u = strings.TrimRight(u, "/")
		if strings.HasPrefix(u, "https://") && !slices.Contains(have, u) && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// pinCA returns a client for caURL (default: the remembered CA) that trusts
// the root whose fingerprint is fp, or the root saved for that CA; the
// config to remember, and the one saved before (nil if none).
func pinCA(h home, caURL, fp string) (*client.Client, clientConfig, *clientConfig, error) {
	saved, _ := h.loadConfig()
	cfg := clientConfig{CA: caURL, Fingerprint: strings.ToLower(strings.ReplaceAll(fp, ":", ""))}
	if saved != nil && cfg.CA == "" {
		cfg.CA = saved.CA
	}
	if cfg.CA == "" {
		return nil, cfg, saved, cli.Usagef("--ca URL is required the first time")
	}
	ccfg := client.Config{URL: cfg.CA}
	root, rerr := os.ReadFile(h.rootPath())
	switch {
	case cfg.Fingerprint != "":
		ccfg.Fingerprint = cfg.Fingerprint
	case saved != nil && saved.CA == cfg.CA && rerr == nil:
		ccfg.RootPEM, cfg.Fingerprint = root, saved.Fingerprint
	default:
		return nil, cfg, saved, cli.Usagef("--fingerprint FP is required to trust %s the first time (sshward-ca init printed it)", cfg.CA)
	}
	c, err := client.New(ccfg)
	return c, cfg, saved, err
}

// loginPassword asks for whatever is missing on the terminal.
func (e *env) loginPassword(ctx context.Context, c *client.Client, user string, pwStdin bool, otp string) (*api.LoginResponse, error) {
	var tty io.ReadWriteCloser
	openTTY := func() (io.ReadWriteCloser, error) {
		if tty != nil {
			return tty, nil
		}
		if e.tty == nil {
			return nil, errors.New("no terminal")
		}
		t, err := e.tty()
		if err != nil {
			return nil, err
		}
		tty = t
		return t, nil
	}
	defer func() {
		if tty != nil {
			tty.Close()
		}
	}()
	if user == "" {
		t, err := openTTY()
		if err != nil {
			return nil, cli.Usagef("--user NAME is required without a terminal")
		}
		if user, err = prompt(t, "sshward user: ", false); err != nil {
			return nil, err
		}
	}
	var pw string
	if pwStdin {
		var err error
		if pw, err = cli.ReadSecretLine(e.stdin); err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
	} else {
		t, err := openTTY()
		if err != nil {
			return nil, cli.Usagef("--password-stdin is required without a terminal")
		}
		if pw, err = prompt(t, fmt.Sprintf("password for %s: ", user), true); err != nil {
			return nil, err
		}
	}
	req := api.LoginRequest{User: user, Password: pw, OTP: otp}
	resp, err := c.Login(ctx, req)
	if api.IsCode(err, api.CodeOTPRequired) && otp == "" {
		t, terr := openTTY()
		if terr != nil {
			return nil, fmt.Errorf("%w", err)
		}
		if req.OTP, terr = prompt(t, "TOTP code: ", false); terr != nil {
			return nil, terr
		}
		resp, err = c.Login(ctx, req)
	}
	return resp, err
}

type oidcLogin struct {
	device, mfa bool
	timeout     time.Duration // for the provider: discovery, the user, the code
}

func (e *env) loginOIDC(ctx context.Context, c *client.Client, o oidcLogin) (*api.LoginResponse, error) {
	oc, err := c.OIDCConfig(ctx)
	if err != nil {
		return nil, err
	}
	if !oc.Enabled {
		return nil, errors.New("this CA has no OIDC provider configured: log in with --user")
	}
	scopes := oc.Scopes
	if o.mfa {
		if len(oc.MFAScopes) == 0 {
			return nil, errors.New("this CA names no oidc.mfa_scopes: whether the login counts as MFA is up to the provider; log in without --mfa")
		}
		scopes = append(slices.Clone(oc.Scopes), oc.MFAScopes...)
	}
	how := "browser login"
	if o.device {
		how = "device login"
	}
	what := fmt.Sprintf("the identity provider at %s (%s)", oc.Issuer, how)
	var stop func()
	fcfg := oidcflow.Config{Issuer: oc.Issuer, ClientID: oc.ClientID, Scopes: scopes, Out: e.stderr, ListenAddr: oc.RedirectListen,
		OnWait: func() { stop = e.startNotice(what, o.timeout) }}
	if opener := e.getenv("SSHWARD_BROWSER"); opener != "" {
		fcfg.OpenBrowser = func(u string) error { return startBrowser(ctx, opener, u) }
	}
	wctx, cancel := context.WithTimeoutCause(ctx, o.timeout, errWaitTimeout)
	defer cancel()
	var tok string
	if o.device {
		tok, err = oidcflow.Device(wctx, fcfg)
	} else {
		tok, err = oidcflow.AuthCode(wctx, fcfg)
	}
	if stop != nil {
		stop()
	}
	if err != nil && waitTimedOut(wctx) {
		return nil, fmt.Errorf("gave up waiting for %s after %s: the login was not completed there; run sshward login --oidc again (--timeout D waits longer)", what, o.timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("OIDC login: %w", err)
	}
	return c.LoginOIDC(ctx, tok)
}

// prompt asks on the terminal; secret input is not echoed.
func prompt(t io.ReadWriter, question string, secret bool) (string, error) {
	fmt.Fprint(t, question)
	if f, ok := t.(*os.File); ok && secret && term.IsTerminal(int(f.Fd())) {
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(t)
		return string(b), err
	}
	line, err := bufio.NewReader(t).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("read answer: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (e *env) cmdLogout(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward logout")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	h, err := e.home()
	if err != nil {
		return err
	}
	s, err := h.loadSession()
	if err != nil {
		return err
	}
	if c, _, err := h.client(s.Token); err == nil {
		if err := c.Logout(ctx); err != nil && !api.IsCode(err, api.CodeUnauthenticated) {
			fmt.Fprintf(e.stderr, "sshward: the CA did not confirm the logout (%v); the local session is removed anyway\n", err)
		}
	}
	if err := os.Remove(h.sessionPath()); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "logged out")
	return nil
}
