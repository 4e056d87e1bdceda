package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mathrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// CA is the subset of the CA's API client (ca/client.Client) the agent uses.
type CA interface {
	// Join exchanges the one-time join token for a host certificate.
	Join(ctx context.Context, req api.JoinRequest) (*api.HostCertResponse, error)
	// RenewHost renews the host certificate, authenticating with it.
	RenewHost(ctx context.Context, cert *ssh.Certificate, signer ssh.Signer, req api.RenewRequest) (*api.HostCertResponse, error)
	// HostRevoked fetches the revocation list of the user CAs the tier trusts.
	HostRevoked(ctx context.Context, tier string, cert *ssh.Certificate, signer ssh.Signer) (*api.RevocationList, error)
}

// FailureMode says what a tier does when recording fails.
type FailureMode string

// Recording failure modes (the tier's on_recording_failure, the
// recording-failure@sshward certificate extension).
const (
	// FailClosed refuses new sessions and ends running ones with a message.
	FailClosed FailureMode = "closed"
	// FailOpen lets sessions go on unrecorded and logs an alert.
	FailOpen FailureMode = "open"
)

// TierSettings are the agent's own settings for its tier. A user
// certificate's sshward extensions override them (the CA is the policy's
// source of truth); these apply to certificates that lack an extension.
type TierSettings struct {
	// RecordInput records what the user types ("i" events).
	RecordInput bool
	// OnRecordingFailure is FailClosed or FailOpen.
	OnRecordingFailure FailureMode
	// EndOnExpiry ends sessions when their certificate expires or is revoked.
	EndOnExpiry bool
	// BulkKeepBytes caps the binary output a recording keeps in its side
	// blob (the tier's bulk_output, api.ExtBulkOutput); 0 keeps all.
	BulkKeepBytes int64
}

// DefaultTierSettings returns the settings of DESIGN.md's default policy
// for tier; unknown tiers get the strict ones.
func DefaultTierSettings(tier string) TierSettings {
	switch tier {
	case api.TierStaging:
		return TierSettings{RecordInput: false, OnRecordingFailure: FailOpen, EndOnExpiry: false}
	case api.TierProduction, api.TierBreakGlass:
		return TierSettings{RecordInput: true, OnRecordingFailure: FailClosed, EndOnExpiry: true}
	}
	return TierSettings{RecordInput: false, OnRecordingFailure: FailClosed, EndOnExpiry: true}
}

// Defaults of Config fields.
const (
	DefaultRevocationInterval = 30 * time.Second
	// DefaultHostCARenewSpread: a host-CA rotation's overlap is at least
	// the host certificate lifetime (a day by default), so renewals have
	// room to spread.
	DefaultHostCARenewSpread = 5 * time.Minute
	// DefaultHandshakeTimeout bounds key exchange and authentication
	// (sshd's LoginGraceTime is 120 s; certificates need no typing).
	DefaultHandshakeTimeout = 15 * time.Second
	// DefaultBannerTimeout is how long a new connection may stay silent
	// before its SSH version line: clients send it at once.
	DefaultBannerTimeout = 5 * time.Second
	// DefaultMaxStartupsPerSource caps unauthenticated connections from
	// one source (IPv4 address, IPv6 /64), as sshd's PerSourceMaxStartups.
	DefaultMaxStartupsPerSource = 10
	// DefaultPerSourcePenalty is added to a source's penalty for each of
	// its connections closed by a pre-auth timeout (sshd's
	// PerSourcePenalties grace-exceeded:10s).
	DefaultPerSourcePenalty = 10 * time.Second
	DefaultMaxSessions      = 10 // per connection, as sshd's MaxSessions
	// DefaultMaxHandshakes is no longer used: see MaxStartups.
	DefaultMaxHandshakes  = 128
	DefaultSFTPServerPath = "/usr/lib/openssh/sftp-server"
	// MaxClockSkew is how early a certificate is accepted before its
	// ValidAfter, for hosts whose clock runs behind the CA's. Expiry is
	// never extended: the CA already backdates ValidAfter for skew.
	MaxClockSkew = time.Minute
)

// DefaultMaxStartups is the default random early drop of unauthenticated
// connections (sshd's MaxStartups, whose default 10:30:100 is scaled up:
// Begin must stay well above MaxStartupsPerSource, or one source's flood
// would start dropping everyone else's connections).
func DefaultMaxStartups() StartupLimits { return StartupLimits{Begin: 100, Rate: 30, Full: 300} }

// DefaultCiphers are the ciphers the agent offers unless Config.Ciphers
// says otherwise: x/crypto/ssh's defaults, less chacha20-poly1305 on CPUs
// with AES and carry-less multiply instructions (amd64, arm64).
//
// Why: the client chooses, taking the first of its own list that the
// server offers, and OpenSSH lists chacha20-poly1305 first. x/crypto's
// ChaCha20 has no assembly on amd64: it was the largest single cost of a
// busy recorded session (about 40% of the agent's CPU time in make bench;
// 3.0 CPU-s/GB per end against 1.7 for aes128-ctr with
// hmac-sha2-256-etm, which OpenSSH picks next, and 1.1 for AES-GCM).
// crypto/tls prefers AES on the same condition. Every client that speaks
// chacha20-poly1305 also speaks aes-ctr, so nobody is locked out; setting
// Ciphers to the AES-GCM ones alone saves the rest, at the cost of
// clients without AES-GCM (paramiko before 3.5, libssh2 before 1.11).
func DefaultCiphers() []string {
	all := ssh.SupportedAlgorithms().Ciphers
	if !hardwareAESGCM() {
		return slices.Clone(all)
	}
	return slices.DeleteFunc(slices.Clone(all), func(c string) bool { return c == ssh.CipherChaCha20Poly1305 })
}

func hardwareAESGCM() bool {
	switch runtime.GOARCH {
	case "amd64":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	}
	return false
}

// Config configures a Server. The zero value of every field not marked
// required is a safe default.
type Config struct {
	// Tier is the tier this host belongs to. Required.
	Tier string
	// DataDir holds the host key and certificate, the trusted user-CA keys,
	// the revocation cache, the single-use serials and (by default) the
	// spool. Created 0700. Required.
	DataDir string
	// CA joins, renews and fetches revocation lists. Required.
	CA CA
	// JoinToken is the one-time join token. It is used only when DataDir
	// holds no host certificate yet (or an expired one); later starts need
	// none. It is never logged.
	JoinToken string
	// Settings override DefaultTierSettings(Tier) when set.
	Settings *TierSettings
	// Playback, when set, ships recordings from the agent's own spool to
	// the playback server (ignored when Spool is given). Nothing leaves the
	// spool before the server acknowledged it.
	Playback *PlaybackConfig
	// Spool receives recordings. Nil: Serve opens a recorder spool in
	// DataDir/spool (repairing what a crash left) and closes it on return.
	Spool Spool
	// Redact adds patterns to recorder.DefaultRedactPatterns: their matches
	// in output and input never reach a recording; "[REDACTED:name]" stands
	// in their place. Each must begin with literal text. Used by the spool
	// Serve opens; a Spool given here brings its own.
	Redact []recorder.RedactPattern
	// HostName names this host in recordings; default os.Hostname.
	HostName string
	// Labels are this host's labels (e.g. app: billing); a certificate
	// scoped to labels is admitted only when the host has every one of them
	// (scope.go). Keys and values as api.CheckLabels.
	Labels map[string]string
	// Auditor receives refusals and session events; default LogAuditor(Logger).
	Auditor Auditor
	// LookupUser maps a principal to a local account; default LookupUser.
	LookupUser func(name string) (*User, error)
	// SFTPServerPath is the sftp-server run as the user when the agent cannot
	// serve SFTP in process; default DefaultSFTPServerPath.
	SFTPServerPath string
	// RevocationInterval is how often the revocation list is polled.
	RevocationInterval time.Duration
	// HostCARenewSpread bounds how long after the CA starts signing with a
	// new host-CA key the agent renews its host certificate onto it (a
	// random time within it, so that a fleet does not renew at once);
	// default DefaultHostCARenewSpread. Orders of either key are obeyed
	// meanwhile (hostcatrust.go).
	HostCARenewSpread time.Duration
	// renewJitter picks the delay within a spread (default uniform at
	// random); tests fix it.
	renewJitter func(spread time.Duration) time.Duration
	// HandshakeTimeout bounds the SSH handshake and authentication, from
	// accept (sshd's LoginGraceTime); default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// BannerTimeout bounds how long a new connection may take to send its
	// SSH version line; idle connections are closed then. Default
	// DefaultBannerTimeout.
	BannerTimeout time.Duration
	// MaxStartupsPerSource caps the unauthenticated connections of one
	// source (an IPv4 address or an IPv6 /64); more are closed at accept.
	// Default DefaultMaxStartupsPerSource.
	MaxStartupsPerSource int
	// PerSourcePenalty is added to a source's penalty each time one of its
	// connections is closed by BannerTimeout or HandshakeTimeout; while the
	// penalty exceeds 15 s the source's new connections are closed at
	// accept (at most 10 min). Default DefaultPerSourcePenalty; negative
	// turns penalties off.
	PerSourcePenalty time.Duration
	// MaxStartups drops new connections at random while many are
	// unauthenticated (sshd's MaxStartups); default DefaultMaxStartups().
	MaxStartups StartupLimits
	// MaxSessions bounds session channels per connection.
	MaxSessions int
	// MaxHandshakes is the former cap on connections handshaking. When set
	// and MaxStartups is zero, it becomes a hard cap: MaxStartups
	// N:100:N. Connections past it are now dropped, not queued.
	MaxHandshakes int
	// UnrecordedRetry is how often reports of unrecorded sessions (an open
	// tier's session that went on without recording) are sent again to the
	// CA and the playback server until they answered; default
	// DefaultUnrecordedRetry.
	UnrecordedRetry time.Duration
	// Ciphers are the SSH ciphers offered (x/crypto/ssh names); default
	// DefaultCiphers().
	Ciphers []string
	// Logger receives operational logs; default discards.
	Logger *slog.Logger
	// Now is the clock for certificate checks and recordings; default time.Now.
	Now func() time.Time
	// Rand is the randomness for keys and ids; default crypto/rand.Reader.
	Rand io.Reader
}

// Check names the first missing or invalid field.
func (c *Config) Check() error {
	if err := api.CheckLabels(c.Labels); err != nil {
		return fmt.Errorf("agent: config: Labels: %w", err)
	}
	switch {
	case c.Tier == "":
		return errors.New("agent: config: Tier is required")
	case c.DataDir == "":
		return errors.New("agent: config: DataDir is required")
	case c.CA == nil:
		return errors.New("agent: config: CA is required")
	case c.RevocationInterval < 0, c.HostCARenewSpread < 0, c.HandshakeTimeout < 0, c.BannerTimeout < 0, c.MaxSessions < 0,
		c.MaxHandshakes < 0, c.MaxStartupsPerSource < 0:
		return errors.New("agent: config: intervals and limits must not be negative")
	}
	if c.MaxStartups != (StartupLimits{}) {
		if err := c.MaxStartups.check(); err != nil {
			return fmt.Errorf("agent: config: MaxStartups: %w", err)
		}
	}
	for _, name := range c.Ciphers {
		if !slices.Contains(ssh.SupportedAlgorithms().Ciphers, name) {
			return fmt.Errorf("agent: config: cipher %q: use one of %s", name,
				strings.Join(ssh.SupportedAlgorithms().Ciphers, ", "))
		}
	}
	if _, err := c.redaction(); err != nil {
		return fmt.Errorf("agent: config: Redact: %w", err)
	}
	if s := c.Settings; s != nil {
		if s.OnRecordingFailure != FailClosed && s.OnRecordingFailure != FailOpen {
			return fmt.Errorf("agent: config: Settings.OnRecordingFailure %q is not %q or %q",
				s.OnRecordingFailure, FailClosed, FailOpen)
		}
	}
	for _, r := range c.Tier {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("agent: config: Tier %q: use lower-case letters, digits, '-' and '_'", c.Tier)
		}
	}
	return nil
}

// redaction compiles the default redaction patterns and c.Redact.
func (c *Config) redaction() (*recorder.Redaction, error) {
	return recorder.NewRedaction(append(recorder.DefaultRedactPatterns(), c.Redact...), 0)
}

// withDefaults returns a copy of c with defaults filled in.
func (c Config) withDefaults() Config {
	if c.Settings == nil {
		s := DefaultTierSettings(c.Tier)
		c.Settings = &s
	} else {
		s := *c.Settings
		c.Settings = &s
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Auditor == nil {
		c.Auditor = LogAuditor(c.Logger)
	}
	if c.LookupUser == nil {
		c.LookupUser = LookupUser
	}
	if c.SFTPServerPath == "" {
		c.SFTPServerPath = DefaultSFTPServerPath
	}
	if c.RevocationInterval == 0 {
		c.RevocationInterval = DefaultRevocationInterval
	}
	if c.HostCARenewSpread == 0 {
		c.HostCARenewSpread = DefaultHostCARenewSpread
	}
	if c.renewJitter == nil {
		c.renewJitter = mathrand.N[time.Duration]
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.BannerTimeout == 0 {
		c.BannerTimeout = DefaultBannerTimeout
	}
	if c.PerSourcePenalty == 0 {
		c.PerSourcePenalty = DefaultPerSourcePenalty
	}
	if c.MaxStartupsPerSource == 0 {
		c.MaxStartupsPerSource = DefaultMaxStartupsPerSource
	}
	if c.MaxStartups == (StartupLimits{}) {
		c.MaxStartups = DefaultMaxStartups()
		if c.MaxHandshakes > 0 {
			c.MaxStartups = StartupLimits{Begin: c.MaxHandshakes, Rate: 100, Full: c.MaxHandshakes}
		}
	}
	if c.UnrecordedRetry <= 0 {
		c.UnrecordedRetry = DefaultUnrecordedRetry
	}
	if len(c.Ciphers) == 0 {
		c.Ciphers = DefaultCiphers()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.HostName == "" {
		c.HostName, _ = os.Hostname()
	}
	c.DataDir = filepath.Clean(c.DataDir)
	return c
}

// PlaybackConfig says where recordings go.
type PlaybackConfig struct {
	// URL is the playback server; "" asks the CA (GET /v1/trust "playback")
	// at start and keeps asking until one is registered. Several,
	// comma-separated, are replicas: the next is used when one cannot be
	// reached (recorder.ShipperConfig.Fallbacks).
	URL string
	// RootPEM is the CA's X.509 root: the playback server's TLS certificate
	// chains to it.
	RootPEM []byte
	// SpoolRecipients (age1…) seal the spool until the playback server
	// has named its own recipients (spoolkeys.go), e.g. on a host that
	// records before it first reaches the server.
	SpoolRecipients []string
}
