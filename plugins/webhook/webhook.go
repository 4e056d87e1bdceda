package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sshward/sshward/plugins"
	"github.com/sshward/sshward/plugins/contract"
)

// Request headers.
const (
	HeaderEvent     = "X-Sshward-Event"
	HeaderSeq       = "X-Sshward-Seq"
	HeaderTimestamp = "X-Sshward-Timestamp"
	HeaderSignature = "X-Sshward-Signature"
)

// Sentinel errors of Verify.
var (
	ErrBadSignature = errors.New("webhook: signature missing, malformed or wrong")
	ErrStale        = errors.New("webhook: timestamp missing, malformed or outside the tolerance")
)

// MinSecretBytes is the shortest secret New accepts.
const MinSecretBytes = 16

// Defaults for Config's zero values.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultAttempts   = 3
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// Config configures a Notifier.
type Config struct {
	// URL receives the POSTs: http or https. Required.
	URL string
	// Secret keys the HMAC; at least MinSecretBytes. Required.
	Secret []byte
	// Client sends the requests. Default: a client with DefaultTimeout per
	// request. Redirects are never followed (a 3xx fails the attempt): the
	// receiver is configured, not discovered.
	Client *http.Client
	// Attempts is how many times one Notify call tries. Default
	// DefaultAttempts.
	Attempts int
	// MinBackoff and MaxBackoff bound the wait between attempts (doubling,
	// with jitter). Defaults DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Now stamps X-Sshward-Timestamp. Default time.Now.
	Now func() time.Time
	// Rand is the jitter source. Default crypto/rand.Reader.
	Rand io.Reader
	// Logger gets one line per failed attempt. Default: discard.
	Logger *slog.Logger
}

// Check reports the first invalid field. Errors never quote the URL or
// the secret.
func (c *Config) Check() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("webhook: config: URL must be an http:// or https:// URL with a host")
	}
	if len(c.Secret) < MinSecretBytes {
		return fmt.Errorf("webhook: config: the secret must be at least %d bytes", MinSecretBytes)
	}
	if c.Attempts < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 {
		return errors.New("webhook: config: Attempts, MinBackoff and MaxBackoff must not be negative")
	}
	return nil
}

// Notifier posts events; it implements plugins.Notifier.
type Notifier struct {
	cfg  Config
	host string // for errors and logs: the URL without path and query
}

// New checks cfg and returns a Notifier.
func New(cfg Config) (*Notifier, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL)
	cfg.Secret = bytes.Clone(cfg.Secret)
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: DefaultTimeout}
	}
	client := *cfg.Client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.Client = &client
	if cfg.Attempts == 0 {
		cfg.Attempts = DefaultAttempts
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Notifier{cfg: cfg, host: u.Scheme + "://" + u.Host}, nil
}

// Notify posts ev, retrying as the package doc says. It returns nil once
// the receiver answered 2xx.
func (n *Notifier) Notify(ctx context.Context, ev contract.AuditEvent) error {
	body, err := plugins.EncodeEvent(ev)
	if err != nil {
		return err
	}
	var last error
	for attempt := 1; attempt <= n.cfg.Attempts; attempt++ {
		retry, err := n.post(ctx, ev, body)
		if err == nil {
			return nil
		}
		last = err
		if !retry || attempt == n.cfg.Attempts {
			break
		}
		n.cfg.Logger.Warn("webhook attempt failed; retrying", "seq", ev.Seq, "attempt", attempt, "err", err)
		t := time.NewTimer(n.backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("webhook: event %d: %w (last attempt: %v)", ev.Seq, ctx.Err(), last)
		case <-t.C:
		}
	}
	return fmt.Errorf("webhook: event %d not delivered: %w", ev.Seq, last)
}

// post makes one attempt; retry says whether another may succeed.
func (n *Notifier) post(ctx context.Context, ev contract.AuditEvent, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, errors.New("webhook: cannot build the request (check the URL)")
	}
	ts := strconv.FormatInt(n.cfg.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sshward-plugin-webhook")
	req.Header.Set(HeaderEvent, ev.Type)
	req.Header.Set(HeaderSeq, strconv.FormatUint(ev.Seq, 10))
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(n.cfg.Secret, ts, body))
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		// *url.Error quotes the whole URL: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return ctx.Err() == nil, fmt.Errorf("POST %s: %w", n.host, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return true, fmt.Errorf("POST %s: receiver answered %s", n.host, resp.Status)
	default:
		return false, fmt.Errorf("POST %s: receiver answered %s (not retried)", n.host, resp.Status)
	}
}

func (n *Notifier) backoff(attempt int) time.Duration {
	b := n.cfg.MinBackoff
	for i := 1; i < attempt && b < n.cfg.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, n.cfg.MaxBackoff)
	half := b / 2
	var buf [8]byte
	if half <= 0 || func() error { _, err := io.ReadFull(n.cfg.Rand, buf[:]); return err }() != nil {
		return b
	}
	return half + time.Duration(binary.BigEndian.Uint64(buf[:])%uint64(half+1))
}

// Sign returns the X-Sshward-Signature value for a body sent at timestamp
// (decimal Unix seconds): "sha256=" and the lowercase hex
// HMAC-SHA256(secret, timestamp + "." + body).
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a received webhook for a receiver: the signature over the
// timestamp and body (constant-time), and that the timestamp lies within
// tolerance of now (a replay of an old request fails). It returns
// ErrBadSignature or ErrStale.
func Verify(secret []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts := h.Get(HeaderTimestamp)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || ts != strconv.FormatInt(sec, 10) {
		return ErrStale
	}
	hexSig, ok := strings.CutPrefix(h.Get(HeaderSignature), "sha256=")
	if !ok {
		return ErrBadSignature
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return ErrBadSignature
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return ErrBadSignature
	}
	// Checked after the signature, so that an attacker learns nothing
	// about the tolerance from unsigned requests.
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	return nil
}
