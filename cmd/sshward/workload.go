package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// envOIDCToken holds a CI platform's OIDC token for sshward cert (issue 12
// §1), for pipelines that get the token in the environment.
const envOIDCToken = "SSHWARD_OIDC_TOKEN"

// certWorkload exchanges a CI platform's OIDC token for a short certificate:
// no login, no prompt, a fresh key every time. Key and certificate land
// where `sshward cert` puts them, so ssh -i / the ssh-config block use them.
func (e *env) certWorkload(ctx context.Context, tier, tokenFile, caURL, fp string, quiet, asJSON bool) error {
	token, err := e.workloadToken(tokenFile)
	if err != nil {
		return err
	}
	h, err := e.home()
	if err != nil {
		return err
	}
	c, cfg, _, err := pinCA(h, caURL, fp)
	if err != nil {
		return err
	}
	// A workload key is never reused: each token buys one key and one
	// certificate, which die with the job.
	key, err := h.renewalKey(tier, e.now(), func(*ssh.Certificate) bool { return true })
	if err != nil {
		return err
	}
	if !quiet && !asJSON {
		fmt.Fprintf(e.stderr, "sshward: exchanging the CI token for a %s certificate…\n", tier)
	}
	resp, err := c.WorkloadCert(ctx, api.WorkloadCertRequest{Token: token, Tier: tier, PublicKey: string(ssh.MarshalAuthorizedKey(key.pub))})
	if err != nil {
		return err
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		return fmt.Errorf("the CA sent an unreadable certificate: %w", err)
	}
	cert, ok := pk.(*ssh.Certificate)
	if !ok || !bytesEqual(cert.Key.Marshal(), key.pub.Marshal()) {
		return errors.New("the CA sent a certificate for another key: refusing it")
	}
	unlock, err := h.lockRenewal(ctx, e.stderr)
	if err != nil {
		return err
	}
	defer unlock()
	if err := writeAtomic(h.rootPath(), c.RootPEM(), 0o644); err != nil {
		return err
	}
	if err := writeJSON(h.configPath(), cfg); err != nil {
		return err
	}
	if tr, err := c.Trust(ctx); err == nil {
		_ = h.writeKnownHosts(tr) // best effort, as at login
	}
	old, _ := readCert(h.certPath(tier))
	if err := h.saveRenewal(tier, key, []byte(resp.Certificate)); err != nil {
		return err
	}
	added := e.addToAgent(key.priv, cert, old, tier)
	if quiet {
		return nil
	}
	return e.printCert(h, tier, cert, asJSON, false, added)
}

// workloadToken reads the token from file, else from $SSHWARD_OIDC_TOKEN.
// It never prints it.
func (e *env) workloadToken(file string) (string, error) {
	var tok string
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read the OIDC token: %w", err)
		}
		tok = string(b)
	} else {
		tok = e.getenv(envOIDCToken)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", cli.Usagef("the OIDC token is empty: ask the CI platform for one (GitHub Actions: id-token: write, then ACTIONS_ID_TOKEN_REQUEST_URL)")
	}
	return tok, nil
}
