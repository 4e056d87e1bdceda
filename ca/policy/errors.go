package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/sshward/sshward/ca/api"
)

// Refusals from Grant. The error Grant returns wraps one of these (check with
// errors.Is) and its Error() is one sentence meant for the user: what was
// refused and how to fix it. It never holds a secret.
var (
	ErrUnknownTier      = errors.New("policy: unknown tier")
	ErrNotEntitled      = errors.New("policy: not entitled to tier")
	ErrMFARequired      = errors.New("policy: multi-factor login required")
	ErrApprovalRequired = errors.New("policy: approved access request required")
	ErrNoPrincipals     = errors.New("policy: no principals")
	// ErrClientAddr means the tier binds certificates to the client address
	// (source_address: client) and Request.ClientAddr was empty or not an IP.
	// It is the CA's fault, not the user's.
	ErrClientAddr = errors.New("policy: client address unknown")
	// ErrBadRequest means Request.Check failed: a caller bug, not a refusal.
	ErrBadRequest = errors.New("policy: bad grant request")
)

// refusal carries a user-facing sentence and the sentinel it stands for.
type refusal struct {
	kind error
	msg  string
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return e.kind }

func refuse(kind error, format string, args ...any) error {
	return &refusal{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// PrincipalError is returned by Grant when the request names a principal the
// identity may not have in the tier.
type PrincipalError struct {
	User      string
	Tier      string
	Principal string   // the first requested principal that is not allowed
	Allowed   []string // what the identity may ask for, sorted
}

func (e *PrincipalError) Error() string {
	return fmt.Sprintf("principal %s is not allowed for %s in tier %s (allowed: %s)",
		quoteOdd(e.Principal), display(e.User), e.Tier, strings.Join(e.Allowed, ", "))
}

// TTLError is returned by Grant when the requested lifetime is outside
// [Min, Max]. Max is the tier's max_ttl; Min is MinTTL.
type TTLError struct {
	Tier     string
	Asked    time.Duration
	Min, Max time.Duration
}

// TooLong reports whether the request exceeded Max (rather than fell short
// of Min).
func (e *TTLError) TooLong() bool { return e.Asked > e.Max }

func (e *TTLError) Error() string {
	if e.TooLong() {
		return fmt.Sprintf("ttl %s is longer than tier %s allows: ask for %s or less",
			FormatDuration(e.Asked), e.Tier, FormatDuration(e.Max))
	}
	return fmt.Sprintf("ttl %s is shorter than the %s minimum: ask for at least %s or leave ttl unset for the tier default",
		FormatDuration(e.Asked), FormatDuration(e.Min), FormatDuration(e.Min))
}

// ParseError is returned by Parse (and Policy.Check) for a policy that cannot
// be used. Line is 1-based, 0 when unknown (a Go-built policy, or a YAML
// error without position). Tier is empty for top-level problems. Field is the
// key at fault (e.g. "max_ttl"), empty when the problem is the YAML itself.
// Reason names the field and says how to fix it.
type ParseError struct {
	Line   int
	Tier   string
	Field  string
	Reason string
}

func (e *ParseError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "policy line %d: ", e.Line)
	} else {
		b.WriteString("policy: ")
	}
	if e.Tier != "" {
		fmt.Fprintf(&b, "tier %q: ", e.Tier)
	}
	b.WriteString(e.Reason)
	return b.String()
}

// ErrorCode maps an error from Grant to the api.Error code the CA answers
// with, so that HTTP handlers need no switch of their own. Unknown errors map
// to api.CodeInternal.
func ErrorCode(err error) string {
	var pe *PrincipalError
	var te *TTLError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrUnknownTier):
		return api.CodeUnknownTier
	case errors.Is(err, ErrMFARequired):
		return api.CodeMFARequired
	case errors.Is(err, ErrNotEntitled), errors.Is(err, ErrApprovalRequired), errors.Is(err, ErrNoPrincipals):
		return api.CodeForbidden
	case errors.As(err, &pe):
		return api.CodePrincipal
	case errors.As(err, &te):
		if te.TooLong() {
			return api.CodeTTL
		}
		return api.CodeBadRequest
	case errors.Is(err, ErrBadRequest):
		return api.CodeBadRequest
	case errors.Is(err, ErrClientAddr):
		return api.CodeInternal // the CA failed to pass the address on
	}
	return api.CodeInternal
}

// display leaves a printable name without spaces as is and quotes anything
// else, so that a user name from an identity provider cannot break a
// one-line message.
func display(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) < 0 {
		return s
	}
	return fmt.Sprintf("%q", s)
}

// quoteOdd leaves a well-formed login name as is and quotes anything else, so
// a hostile string cannot forge the rest of a message.
func quoteOdd(s string) string {
	if IsValidPrincipal(s) {
		return s
	}
	return fmt.Sprintf("%q", s)
}
