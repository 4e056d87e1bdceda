package plugins

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"
)

// Kind says which contract a plugin binary serves.
type Kind string

// The two contracts (DESIGN.md "Plugins").
const (
	// KindNotifier plugins receive every audit event (Notifier).
	KindNotifier Kind = "notifier"
	// KindApproval plugins review access requests (ca.ApprovalPolicy).
	KindApproval Kind = "approval"
)

// Defaults for Config's zero values.
const (
	DefaultCallTimeout       = 30 * time.Second
	DefaultStartTimeout      = 10 * time.Second
	DefaultRestartBackoff    = 250 * time.Millisecond
	DefaultMaxRestartBackoff = 30 * time.Second
)

// Config describes one plugin binary. It usually comes from the plugins
// section of the CA's config.yaml.
type Config struct {
	// Name identifies the plugin in logs, errors and the notifier cursor
	// ("notify.cursor."+Name): letters, digits, '.', '_' and '-', at most
	// 64 bytes. Required.
	Name string
	// Kind is the contract the binary serves. Required.
	Kind Kind
	// Path is the plugin executable, absolute. Required.
	Path string
	// SHA256 is the hex SHA-256 of the executable. The host refuses to run
	// a binary with another digest, at Load and at every restart (go-plugin
	// SecureConfig). Required.
	SHA256 string
	// Args are passed to the executable.
	Args []string
	// Env is the plugin's whole environment, "KEY=VALUE" each, besides the
	// variables go-plugin adds for its handshake. The CA's own environment
	// is deliberately not inherited: it may hold the CA passphrase.
	Env []string

	// CallTimeout bounds one call when ctx allows longer. A call that runs
	// into it counts as a hung plugin: the process is killed and restarted
	// on a later call. Default DefaultCallTimeout.
	CallTimeout time.Duration
	// StartTimeout bounds starting the process and the handshake. Default
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// RestartBackoff is the wait before the second restart attempt after a
	// crash (the first is immediate); it doubles per further failure up to
	// MaxRestartBackoff. Calls inside the wait fail fast with
	// ErrUnavailable. Defaults DefaultRestartBackoff, DefaultMaxRestartBackoff.
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration

	// Now is the clock for the restart backoff. Default time.Now.
	Now func() time.Time
	// Logger receives process starts, exits and the plugin's own log lines.
	// Default: discard.
	Logger *slog.Logger
}

// Check reports the first invalid field.
func (c *Config) Check() error {
	if err := checkName(c.Name); err != nil {
		return err
	}
	if c.Kind != KindNotifier && c.Kind != KindApproval {
		return fmt.Errorf("plugins: config %s: kind %q is not %q or %q", c.Name, c.Kind, KindNotifier, KindApproval)
	}
	if c.Path == "" || !filepath.IsAbs(c.Path) {
		return fmt.Errorf("plugins: config %s: path %q must be an absolute path to the plugin executable", c.Name, c.Path)
	}
	if _, err := parseSHA256(c.SHA256); err != nil {
		return fmt.Errorf("plugins: config %s: sha256: %w", c.Name, err)
	}
	for _, kv := range c.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			// The value may be a secret: name the variable only.
			return fmt.Errorf("plugins: config %s: env entry %q is not KEY=VALUE", c.Name, k)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"call timeout", c.CallTimeout}, {"start timeout", c.StartTimeout}, {"restart backoff", c.RestartBackoff}, {"max restart backoff", c.MaxRestartBackoff}} {
		if d.v < 0 {
			return fmt.Errorf("plugins: config %s: %s is negative", c.Name, d.name)
		}
	}
	return nil
}

// withDefaults returns a copy of c with zero values filled in.
func (c Config) withDefaults() Config {
	c.Args = append([]string(nil), c.Args...)
	c.Env = append([]string(nil), c.Env...)
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.RestartBackoff == 0 {
		c.RestartBackoff = DefaultRestartBackoff
	}
	if c.MaxRestartBackoff == 0 {
		c.MaxRestartBackoff = DefaultMaxRestartBackoff
	}
	if c.MaxRestartBackoff < c.RestartBackoff {
		c.MaxRestartBackoff = c.RestartBackoff
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// checkName accepts the names Config.Name allows.
func checkName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("plugins: config: name %q must be 1 to 64 bytes", name)
	}
	for _, r := range name {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("plugins: config: name %q may hold only letters, digits, '.', '_' and '-'", name)
		}
	}
	return nil
}

// parseSHA256 decodes a hex SHA-256 digest (either case).
func parseSHA256(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("%q is not a hex SHA-256 (64 hex digits; run sha256sum on the plugin binary)", s)
	}
	return b, nil
}
