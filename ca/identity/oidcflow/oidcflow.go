package oidcflow

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// DefaultScopes are requested when Config.Scopes is empty.
var DefaultScopes = []string{oidc.ScopeOpenID, "profile", "email"}

// Config describes the provider, the client registered there, and where to
// talk to the user.
type Config struct {
	Issuer   string // issuer URL as in the provider's discovery document
	ClientID string
	// ClientSecret is for confidential clients only; a CLI is normally a
	// public client and relies on PKCE instead.
	ClientSecret string
	// Scopes to request; "openid" is added when missing. Default DefaultScopes.
	Scopes []string
	// Out receives instructions for the user (URL to open, device code).
	// Default io.Discard.
	Out io.Writer
	// OpenBrowser opens the authorization URL; nil means only print it. An
	// error is reported on Out and the flow goes on waiting: the user can
	// still open the printed URL.
	OpenBrowser func(url string) error
	// OnWait, when set, is called once the instructions are on Out and the
	// flow waits for the user (browser callback or device approval); nothing
	// more is written to Out after it. The CLI starts its progress line here.
	OnWait     func()
	HTTPClient *http.Client // default http.DefaultClient
	// ListenAddr is the loopback address of the redirect listener, default
	// 127.0.0.1:0 (any free port). RFC 8252 §7.3 lets the port vary, but some
	// providers (glewlwyd among them) match redirect URIs exactly: then pick
	// a fixed port here and register http://127.0.0.1:PORT/callback.
	ListenAddr string
}

// Check reports the first missing or invalid field.
func (c Config) Check() error {
	switch {
	case c.Issuer == "":
		return errors.New("oidcflow: config: Issuer is required")
	case c.ClientID == "":
		return errors.New("oidcflow: config: ClientID is required")
	}
	if c.ListenAddr != "" {
		host, _, err := net.SplitHostPort(c.ListenAddr)
		if err != nil {
			return fmt.Errorf("oidcflow: config: ListenAddr: %w", err)
		}
		// The authorization code travels to this listener: anything but
		// loopback would hand it to the network (RFC 8252 §8.3).
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("oidcflow: config: ListenAddr %q is not a loopback address", c.ListenAddr)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if len(c.Scopes) == 0 {
		c.Scopes = DefaultScopes
	}
	if !slices.Contains(c.Scopes, oidc.ScopeOpenID) {
		c.Scopes = append([]string{oidc.ScopeOpenID}, c.Scopes...)
	} else {
		c.Scopes = slices.Clone(c.Scopes)
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:0"
	}
	return c
}

// session is a discovered provider plus the OAuth 2.0 client config.
type session struct {
	cfg      Config
	provider *oidc.Provider
	oauth    oauth2.Config
}

// httpContext makes x/oauth2 and go-oidc send their requests with
// cfg.HTTPClient (both read it from the context).
func (s *session) httpContext(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, s.cfg.HTTPClient)
}

func newSession(ctx context.Context, cfg Config) (*session, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, cfg.HTTPClient), cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidcflow: discover %q: %w", cfg.Issuer, err)
	}
	return &session{
		cfg:      cfg,
		provider: provider,
		oauth: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			Endpoint:     provider.Endpoint(),
			Scopes:       cfg.Scopes,
		},
	}, nil
}

// idToken takes the ID token out of a token response and checks its
// signature, issuer, audience and expiry (and nonce, when not empty). The CA
// checks it again; this check is for the user, so that a wrong provider
// fails here, with a message, rather than at the CA.
func (s *session) idToken(ctx context.Context, tok *oauth2.Token, nonce string) (string, error) {
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return "", ErrNoIDToken
	}
	idt, err := s.provider.Verifier(&oidc.Config{ClientID: s.cfg.ClientID}).Verify(s.httpContext(ctx), raw)
	if err != nil {
		return "", fmt.Errorf("oidcflow: check id token: %w", err)
	}
	if nonce != "" && !equalSecret(idt.Nonce, nonce) {
		return "", ErrNonceMismatch
	}
	return raw, nil
}

// waiting calls OnWait, if any.
func (s *session) waiting() {
	if s.cfg.OnWait != nil {
		s.cfg.OnWait()
	}
}

// printf writes instructions for the user; a broken terminal must not stop
// the login, so write errors are ignored.
func (s *session) printf(format string, args ...any) {
	_, _ = fmt.Fprintf(s.cfg.Out, format, args...)
}

func equalSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
