package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/sshward/sshward/ca/policy"
)

// layout names the files of a CA directory.
type layout struct{ dir string }

func (l layout) config() string             { return filepath.Join(l.dir, "config.yaml") }
func (l layout) policy() string             { return filepath.Join(l.dir, "policy.yaml") }
func (l layout) keys() string               { return filepath.Join(l.dir, "keys") }
func (l layout) tls() string                { return filepath.Join(l.dir, "tls") }
func (l layout) db() string                 { return filepath.Join(l.dir, "ca.db") }
func (l layout) socket() string             { return filepath.Join(l.dir, "admin.sock") }
func (l layout) userCAName(t string) string { return "user-ca-" + t }

const hostCAName = "host-ca"

func (l layout) check() error {
	if l.dir == "" {
		return fmtUsage("--dir DIR is required")
	}
	if _, err := os.Stat(l.config()); err != nil {
		return fmt.Errorf("%s is not an sshward CA directory (no config.yaml): run sshward-ca init --dir %s", l.dir, l.dir)
	}
	return nil
}

// config is DIR/config.yaml: server settings. The tier policy is policy.yaml.
type config struct {
	Listen   string         `yaml:"listen"`
	TLSNames []string       `yaml:"tls_names"`
	OIDC     oidcConfig     `yaml:"oidc"`
	Plugins  []pluginConfig `yaml:"plugins"`
	// OnCallSchedule is the on-call schedule file (ca/oncall), relative
	// to the CA directory; required by tiers that use it.
	OnCallSchedule string `yaml:"oncall_schedule"`
	// Store selects where the CA's state lives (storecfg.go); default the
	// bbolt file ca.db.
	Store storeConfig `yaml:"store"`
	// Audit archives the audit log to object storage (auditarchive.go).
	Audit auditConfig `yaml:"audit"`
	// Keys puts the CA keys in a hardware module (keys.go).
	Keys keysConfig `yaml:"keys"`
}

type oidcConfig struct {
	Issuer   string   `yaml:"issuer"`
	ClientID string   `yaml:"client_id"`
	Scopes   []string `yaml:"scopes"`
	// MFAScopes are asked for on top of Scopes by `sshward login --oidc
	// --mfa`: scopes the provider guards with a second factor.
	MFAScopes   []string `yaml:"mfa_scopes"`
	UserClaim   string   `yaml:"user_claim"`
	GroupsClaim string   `yaml:"groups_claim"`
	MFAAMR      []string `yaml:"mfa_amr"`
	MFAACR      []string `yaml:"mfa_acr"`
	// RedirectListen is told to clients for the auth-code redirect.
	RedirectListen string `yaml:"redirect_listen"`
}

const defaultConfig = `# sshward-ca settings. The tier policy lives in policy.yaml beside this file.
# listen: the HTTPS address (sshward-ca serve --listen overrides it).
listen: 127.0.0.1:8443
# tls_names: DNS names and IPs the CA's TLS certificate covers; add the name
# clients and hosts use to reach this CA.
tls_names: [localhost, 127.0.0.1, "::1"]
# oidc: log in through an OpenID Connect provider (auth code + PKCE on a
# loopback redirect, or the device flow). Empty issuer = disabled.
oidc:
  issuer: ""
  client_id: ""
  scopes: [openid, profile, email, groups]
  mfa_scopes: []   # added by sshward login --oidc --mfa, e.g. [mfa]: a scope the provider grants only after OTP
  user_claim: preferred_username   # falls back to email, then sub
  groups_claim: groups
  mfa_amr: [otp, mfa, hwk, swk, totp]  # any of these in amr counts as MFA
  mfa_acr: []
  redirect_listen: ""   # e.g. 127.0.0.1:8250 when the provider matches redirect URIs exactly
# plugins: executables the CA runs over go-plugin (gRPC, mutual TLS). Each is
# pinned by its SHA-256 (sha256sum BINARY); a mismatch refuses to start.
# kind notifier gets every audit event (queued in the audit log, retried);
# kind approval reviews access requests: all must allow, and one that is
# missing or crashed denies (fail closed). A plugin's environment is env only.
# plugins:
#   - name: webhook
#     kind: notifier
#     path: /usr/local/bin/sshward-plugin-webhook   # relative: to this directory
#     sha256: "<sha256sum of the binary>"
#     args: [--url, "https://hooks.example.com/sshward", --secret-file, /etc/sshward/webhook.secret]
#   - name: oncall
#     kind: approval
#     path: /usr/local/bin/sshward-plugin-oncall
#     sha256: "<sha256sum of the binary>"
#     args: [--schedule, /etc/sshward/oncall.yaml]
#     env: {TZ: UTC}
plugins: []
# oncall_schedule: the on-call schedule (rotations, overrides, time zone; see
# the README's On-call section), relative to this directory. Required by
# tiers with requires_oncall or oncall_approvals; re-read when it changes and
# on SIGHUP.
# oncall_schedule: oncall.yaml
# store: where the CA keeps its state. Default: the file ca.db here. To run
# several sshward-ca serve replicas (each with a copy of this directory) on
# one etcd cluster instead (README: Running beyond one machine):
# store:
#   etcd:
#     endpoints: [https://etcd1:2379, https://etcd2:2379, https://etcd3:2379]
#     prefix: sshward
#     tls: {ca: etcd-ca.pem, cert: etcd-client.pem, key: etcd-client-key.pem}
# keys: CA keys in a hardware module (PKCS#11; sshward-ca built with
# make build-pkcs11). kms: the token new keys are made in (sshward-ca init
# --kms, keys rotate, a tier added later); host, tiers: keys already in a
# token to use as the host CA or a tier's user CA when keys/ holds none yet.
# The PIN comes from the file pin-source names (mode 0600), never pin-value.
# keys:
#   kms: "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=sshward?pin-source=/etc/sshward/hsm.pin"
#   host: "pkcs11:module-path=…;token=sshward;id=01;object=host-ca?pin-source=/etc/sshward/hsm.pin"
#   tiers: {production: "pkcs11:module-path=…;token=sshward;id=02;object=prod-ca?pin-source=/etc/sshward/hsm.pin"}
`

func loadConfig(path string) (*config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var c config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8443"
	}
	if err := c.Keys.check(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

func loadPolicy(path string) (*policy.Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := policy.Parse(data)
	if err != nil {
		var pe *policy.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %s", path, trimPrefix(err.Error(), "policy "))
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

func trimPrefix(s, p string) string {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
