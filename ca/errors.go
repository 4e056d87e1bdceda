package ca

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/sshward/sshward/ca/api"
)

// Sentinel errors. Each maps to one user-facing message and HTTP status in
// Refusal; callers test them with errors.Is.
var (
	ErrBadCredentials = errors.New("ca: user or password is wrong")
	ErrOTPRequired    = errors.New("ca: a TOTP code is required")
	ErrBadOTP         = errors.New("ca: TOTP code is wrong or was already used")
	ErrTokenReplayed  = errors.New("ca: identity provider token already used")
	ErrSessionInvalid = errors.New("ca: session is missing, expired or revoked")
	ErrUserExists     = errors.New("ca: user already exists")
	ErrUserNotFound   = errors.New("ca: no such user")
	ErrNotFound       = errors.New("ca: not found")
	ErrTokenInvalid   = errors.New("ca: join token is unknown, used or expired")
	ErrNoOIDC         = errors.New("ca: OIDC login is not configured")
	ErrUserDisabled   = errors.New("ca: user is disabled")
)

// Refusal is a refusal to show to a user: a code, an HTTP status and one
// sentence. It wraps the internal cause, which is logged but never shown.
type Refusal struct {
	Code    string
	Status  int
	Message string
	Cause   error
	// Audit, when set, is the reason the audit log records instead of
	// Message: what the user must not learn (a disabled account answers
	// like a wrong password) but the auditor must.
	Audit string
}

func (r *Refusal) Error() string { return r.Message }
func (r *Refusal) Unwrap() error { return r.Cause }

// APIError returns the wire form.
func (r *Refusal) APIError() *api.Error {
	return &api.Error{Code: r.Code, Message: r.Message, Status: r.Status}
}

func refuse(code string, status int, cause error, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Status: status, Message: fmt.Sprintf(format, args...), Cause: cause}
}

func badRequest(cause error, format string, args ...any) *Refusal {
	return refuse(api.CodeBadRequest, http.StatusBadRequest, cause, format, args...)
}
