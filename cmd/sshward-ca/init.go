package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/keys"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/cmd/internal/cli"
)

var fmtUsage = cli.Usagef

// initResult is the --json output of init (DESIGN.md CLI contract:
// fingerprint, user_ca{tier: line}, host_ca).
type initResult struct {
	Dir         string            `json:"dir"`
	Fingerprint string            `json:"fingerprint"`
	UserCA      map[string]string `json:"user_ca"`
	HostCA      string            `json:"host_ca"`
	KnownHosts  string            `json:"known_hosts"`
}

func (e *env) passphrase(file string) ([]byte, error) {
	p, err := keys.ReadPassphrase(e.getenv("SSHWARD_CA_PASSPHRASE"), file)
	if err != nil {
		return nil, errors.New(trimPrefix(err.Error(), "keys: read passphrase: "))
	}
	return p, nil
}

func (e *env) cmdInit(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca init --dir DIR [--json]")
	dir := fs.String("dir", "", "directory for the CA's keys, policy and store (created, 0700)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	passFile := fs.String("passphrase-file", "", "file holding the passphrase that encrypts the CA keys (else $SSHWARD_CA_PASSPHRASE)")
	name := fs.String("name", "sshward", "name of the X.509 root")
	kms := fs.String("kms", "", "make the CA keys in this PKCS#11 token: pkcs11:module-path=…;token=…?pin-source=FILE (needs make build-pkcs11)")
	var tlsNames cli.StringList
	fs.Var(&tlsNames, "tls-name", "extra DNS name or IP for the CA's TLS certificate (repeatable)")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return fmtUsage("--dir DIR is required")
	}
	pass, err := e.passphrase(*passFile)
	if err != nil {
		return err
	}
	l := layout{*dir}
	if _, err := os.Stat(l.config()); err == nil {
		return fmt.Errorf("%s already holds a CA (config.yaml exists): pick another --dir", *dir)
	}
	kc := keysConfig{KMS: *kms}
	if err := kc.check(); err != nil {
		return fmt.Errorf("--kms%s", trimPrefix(err.Error(), "keys.kms"))
	}
	if *kms != "" {
		if err := keys.CheckTokenURI(*kms); err != nil {
			return fmt.Errorf("--kms: %w", err)
		}
	}
	if err := os.MkdirAll(l.keys(), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", l.keys(), err)
	}
	if err := os.Chmod(*dir, 0o700); err != nil {
		return err
	}
	pol, err := policy.Parse(policy.Default())
	if err != nil {
		return fmt.Errorf("default policy: %w", err)
	}
	res := initResult{Dir: *dir, UserCA: map[string]string{}}
	for _, t := range pol.Tiers {
		if res.UserCA[t.Name], err = newCAKey(ctx, l, kc, ca.UserKey(t.Name), pass); err != nil {
			return err
		}
	}
	if res.HostCA, err = newCAKey(ctx, l, kc, ca.HostKey, pass); err != nil {
		return err
	}
	res.KnownHosts = "@cert-authority * " + res.HostCA
	root, err := tlsca.CreateRoot(ctx, l.tls(), pass, *name+" root", time.Now())
	if err != nil {
		return fmt.Errorf("create TLS root: %w", err)
	}
	res.Fingerprint = root.Fingerprint()
	if err := writeFileNew(l.policy(), policy.Default(), 0o600); err != nil {
		return err
	}
	cfg := defaultConfig
	if len(tlsNames) > 0 {
		cfg = strings.Replace(cfg, `tls_names: [localhost, 127.0.0.1, "::1"]`, `tls_names: [localhost, 127.0.0.1, "::1", `+quoteList(tlsNames)+`]`, 1)
	}
	if *kms != "" {
		cfg += "keys:\n  kms: " + strconv.Quote(*kms) + "\n"
	}
	if err := writeFileNew(l.config(), []byte(cfg), 0o600); err != nil {
		return err
	}
	db, err := store.Open(ctx, store.Options{Path: l.db()})
	if err != nil {
		return fmt.Errorf("create store: %w", err)
	}
	if err := db.Close(); err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(e.stdout, res)
	}
	w := e.stdout
	fmt.Fprintf(w, "sshward CA created in %s\n\n", *dir)
	fmt.Fprintf(w, "root fingerprint (clients pin this with --fingerprint):\n  %s\n\n", res.Fingerprint)
	fmt.Fprintf(w, "user CAs (sshd: TrustedUserCAKeys; a host trusts only its tier):\n")
	for _, t := range pol.Tiers {
		fmt.Fprintf(w, "  %-12s %s\n", t.Name, res.UserCA[t.Name])
	}
	fmt.Fprintf(w, "\nhost CA (clients: known_hosts):\n  %s\n\n", res.KnownHosts)
	fmt.Fprintf(w, "next:\n  sshward-ca users add alice --groups engineers --totp --password-stdin --dir %s\n  sshward-ca serve --dir %s\n", *dir, *dir)
	return nil
}

// newCAKey makes id's key (in the kms token when kc names one, else an
// encrypted file) and returns its public line.
func newCAKey(ctx context.Context, l layout, kc keysConfig, id ca.KeyID, pass []byte) (string, error) {
	if kc.KMS == "" && id.Host {
		k, err := keys.Create(ctx, keys.CreateRequest{Dir: l.keys(), Name: l.keyName(id), Passphrase: pass, Comment: keyComment(id)})
		if err != nil {
			return "", fmt.Errorf("create %s: %w", id, err)
		}
		return pubLine(k)
	}
	if _, err := ensureKey(ctx, l, kc, id, pass, time.Now()); err != nil {
		return "", err
	}
	ring, err := keys.LoadRing(ctx, l.keys(), l.keyName(id), pass)
	if err != nil {
		return "", err
	}
	defer ring.Current.Close()
	return pubLine(ring.Current)
}

func pubLine(k *keys.Key) (string, error) {
	s, err := k.SSHSigner()
	if err != nil {
		return "", err
	}
	return authorizedKeyLine(s.PublicKey()), nil
}

func writeFileNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = `"` + strings.ReplaceAll(s, `"`, ``) + `"`
	}
	return strings.Join(q, ", ")
}
