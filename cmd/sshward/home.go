package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
)

// home is the client's state directory ($SSHWARD_HOME, default ~/.sshward).
type home struct{ dir string }

func (e *env) home() (home, error) {
	if d := e.getenv("SSHWARD_HOME"); d != "" {
		return home{d}, nil
	}
	h := e.getenv("HOME")
	if h == "" {
		var err error
		if h, err = os.UserHomeDir(); err != nil {
			return home{}, errors.New("cannot find your home directory: set SSHWARD_HOME")
		}
	}
	return home{filepath.Join(h, ".sshward")}, nil
}

func (h home) configPath() string         { return filepath.Join(h.dir, "config.json") }
func (h home) rootPath() string           { return filepath.Join(h.dir, "root.pem") }
func (h home) sessionPath() string        { return filepath.Join(h.dir, "session.json") }
func (h home) knownHostsPath() string     { return filepath.Join(h.dir, "known_hosts") }
func (h home) keyPath(tier string) string { return filepath.Join(h.dir, "keys", tier) }
func (h home) certPath(tier string) string {
	return filepath.Join(h.dir, "keys", tier+"-cert.pub")
}

// writeKnownHosts saves an @cert-authority line for every trusted host-CA
// key, so ssh verifies sshward hosts without trust on first use. During a
// host-CA rotation's overlap there are two: hosts carry certificates of
// either key until they renew. A retired key is left out (the file is
// rewritten whole), so its certificates are refused.
func (h home) writeKnownHosts(tr *api.TrustResponse) error {
	return writeAtomic(h.knownHostsPath(), []byte(strings.Join(knownHostsLines(tr), "\n")+"\n"), 0o644)
}

// knownHostsLines are the @cert-authority lines of tr's host-CA keys.
func knownHostsLines(tr *api.TrustResponse) []string {
	keys := tr.HostCAKeys
	if len(keys) == 0 {
		keys = []string{tr.HostCA}
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, "@cert-authority * "+k)
	}
	return out
}

// clientConfig is what login remembers about the CA.
type clientConfig struct {
	CA          string `json:"ca"`
	Fingerprint string `json:"fingerprint"`
	User        string `json:"user,omitempty"`
	OIDC        bool   `json:"oidc,omitempty"`
	// CAReplicas are the CA replicas the trust bundle named at login
	// (ca_replicas): tried after CA when it fails, with the same saved
	// root, so a URL learned here gets no trust of its own.
	CAReplicas []string `json:"ca_replicas,omitempty"`
}

// session is the saved CA session. The token is a secret: the file is 0600.
type session struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	Groups    []string  `json:"groups"`
	MFA       bool      `json:"mfa"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (h home) loadConfig() (*clientConfig, error) {
	var c clientConfig
	if err := readJSON(h.configPath(), &c); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("not set up yet: run sshward login --ca URL --fingerprint FP")
		}
		return nil, err
	}
	return &c, nil
}

func (h home) loadSession() (*session, error) {
	var s session
	if err := readJSON(h.sessionPath(), &s); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("not logged in: run sshward login")
		}
		return nil, err
	}
	return &s, nil
}

// client returns a CA client trusting the saved root.
func (h home) client(token string) (*client.Client, *clientConfig, error) {
	cfg, err := h.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	root, err := os.ReadFile(h.rootPath())
	if err != nil {
		return nil, nil, fmt.Errorf("the CA root is missing (%s): run sshward login --ca URL --fingerprint FP", h.rootPath())
	}
	c, err := client.New(client.Config{URL: cfg.CA, RootPEM: root, Token: token})
	if err != nil {
		return nil, nil, err
	}
	c.LearnReplicas(cfg.CAReplicas)
	return c, cfg, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is damaged (%v): run sshward login again", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, append(b, '\n'), 0o600)
}

// writeAtomic writes a file via a temporary name and rename, so a reader
// (ssh reading CertificateFile) never sees half a file.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
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
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
