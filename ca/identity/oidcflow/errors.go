package oidcflow

import (
	"errors"
	"fmt"
)

var (
	// ErrNoIDToken is returned when the token response carries no id_token:
	// the provider treated the login as plain OAuth 2.0 (is "openid" allowed
	// for the client?).
	ErrNoIDToken = errors.New("oidcflow: provider returned no id token")
	// ErrNonceMismatch is returned when the ID token's nonce is not the one
	// sent: the token belongs to another login.
	ErrNonceMismatch = errors.New("oidcflow: id token nonce does not match this login")
	// ErrNoDeviceEndpoint is returned by Device when discovery announces no
	// device_authorization_endpoint (RFC 8628 §4).
	ErrNoDeviceEndpoint = errors.New("oidcflow: provider does not support the device flow")
)

// AuthError is an error the provider sent to the redirect URI
// (RFC 6749 §4.1.2.1), for example access_denied when the user declined.
type AuthError struct {
	Code        string // error
	Description string // error_description, may be empty
}

func (e *AuthError) Error() string {
	if e.Description == "" {
		return fmt.Sprintf("oidcflow: provider refused the login: %s", e.Code)
	}
	return fmt.Sprintf("oidcflow: provider refused the login: %s: %s", e.Code, e.Description)
}
