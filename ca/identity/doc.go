// Package identity checks credentials: local passwords (argon2id, or bcrypt
// for imported users), TOTP codes with replay protection, the failed-login
// lockout schedule, and OIDC ID tokens. It stores nothing; package ca keeps
// users, last TOTP steps and failure counts in its store and calls in here.
//
// A local login, as package ca runs it:
//
//	ok, err := identity.VerifyPassword(user.PasswordHash, password)
//	// unknown user: identity.DummyVerify(password), so timing tells nothing
//	step, err := identity.CheckTOTP(user.TOTPSecret, code, now, user.TOTPLastStep)
//	// store step as the new TOTPLastStep; on failure count it and lock until
//	until := identity.Lockout{}.Until(user.Failures, now)
//
// Enrolment: HashPassword(password, rand.Reader) gives a PHC string
// ($argon2id$v=19$m=47104,t=1,p=1$salt$hash); NewTOTP gives the base32
// secret and the otpauth:// URL for the user's authenticator app.
//
// OIDC: the CLI runs the login (package oidcflow) and hands the raw ID token
// to the CA, which checks it:
//
//	v, err := identity.NewOIDCVerifier(ctx, identity.OIDCConfig{Issuer: iss, ClientID: "sshward"})
//	id, err := v.Verify(ctx, rawIDToken)
//	// id.User, id.Groups, id.MFA (from amr/acr)
//
// Verify returns *TokenExpiredError, *AudienceError, ErrBadSignature,
// ErrKeysUnavailable and the other errors in errors.go, so the CA can tell
// the user what to do. References: RFC 9106 (argon2), RFC 6238 (TOTP),
// RFC 8176 (amr values), OpenID Connect Core 1.0 §3.1.3.7 (ID token checks).
//
// Package glewlwydtest runs a real OIDC provider for tests.
package identity
