package oidcflow

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/oauth2"
)

// pollTimeout bounds the device flow when the provider sends no expires_in.
const pollTimeout = 15 * time.Minute

// Device runs the device authorization grant (RFC 8628) for machines without
// a browser: it asks for a device code, prints the verification URL and the
// user code to Out, polls the token endpoint at the interval the provider
// asks for until the user approves on another device, and returns the ID
// token (checked for signature, audience and expiry).
//
// The lines on Out read, for scripts and tests:
//
//	To log in, open https://idp.example/device
//	and enter the code ABCD-EFGH
func Device(ctx context.Context, cfg Config) (rawIDToken string, err error) {
	s, err := newSession(ctx, cfg)
	if err != nil {
		return "", err
	}
	if s.oauth.Endpoint.DeviceAuthURL == "" {
		return "", ErrNoDeviceEndpoint
	}
	var authOpts []oauth2.AuthCodeOption
	if s.cfg.ClientSecret != "" {
		// x/oauth2 sends only client_id to the device endpoint; a
		// confidential client must authenticate there too (RFC 8628 §3.1).
		authOpts = append(authOpts, oauth2.SetAuthURLParam("client_secret", s.cfg.ClientSecret))
	}
	da, err := s.oauth.DeviceAuth(s.httpContext(ctx), authOpts...)
	if err != nil {
		return "", fmt.Errorf("oidcflow: request a device code: %w", err)
	}
	s.printf("To log in, open %s\nand enter the code %s\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		s.printf("(or open %s, which carries the code)\n", da.VerificationURIComplete)
	}
	s.printf("Waiting for approval ...\n")
	s.waiting()

	if da.Expiry.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pollTimeout)
		defer cancel()
	}
	tok, err := s.oauth.DeviceAccessToken(s.httpContext(ctx), da)
	if err != nil {
		return "", fmt.Errorf("oidcflow: wait for approval: %w", err)
	}
	return s.idToken(ctx, tok, "")
}
