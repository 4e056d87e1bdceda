// Package glewlwydtest runs a real OpenID Connect provider, Debian's
// glewlwyd (2.7.5), on loopback for tests: a libconfig file and a sqlite
// database in t.TempDir(), a free port, provisioning through glewlwyd's
// admin REST API, and SIGTERM when the test ends.
//
//	p := glewlwydtest.Start(t, glewlwydtest.Options{})
//	p.AddUser(t, "alice", "pw", []string{"ops"}, true) // with an HOTP secret
//	raw, err := oidcflow.AuthCode(ctx, oidcflow.Config{
//		Issuer: p.Issuer, ClientID: p.ClientID,
//		Scopes: []string{"openid", glewlwydtest.GroupsScope, glewlwydtest.MFAScope},
//		OpenBrowser: func(u string) error {
//			p.CompleteAuthCode(t, u, "alice", "pw", p.NextOTP(t, "alice"))
//			return nil
//		},
//	})
//
// What Start provisions: the OIDC plugin "oidc" (ES256, issuer
// BaseURL/api/oidc, claims preferred_username, name, email and a groups
// array, PKCE required for public clients, device grant with a 1 s poll
// interval); the OTP scheme "otp"; the scopes profile, email, groups and
// mfa, the last one needing the OTP scheme, which is what puts "otp" in amr;
// and the client "sshward" (public unless Options.Confidential) with the
// code, device and refresh grants.
//
// glewlwyd compares redirect URIs as exact strings, port included, so
// CompleteAuthCode registers the redirect URI it finds in the auth URL
// before playing the browser; AllowRedirectURI does that on its own.
//
// Facts this relies on, found by running glewlwyd 2.7.5: the configuration must not mention
// use_secure_connection; the seeded administrator is admin/password; a user
// must grant scopes to a client (PUT /api/delegate/USER/auth/grant/CLIENT
// with a space-separated list) or only openid survives; HOTP is used rather
// than TOTP because a TOTP code is good once per 30 s window, and glewlwyd
// accepts only the HOTP code at its current moving factor (hotp-window did
// not widen that), so NextOTP reads the factor from glewlwyd; a confidential
// client is refused (unauthorized_client) until its
// token_endpoint_auth_method lists client_secret_basic/client_secret_post; a
// login that asks for a scope needing OTP without doing the OTP step is sent
// to login.html instead of the redirect URI, while the device flow approves
// it without "otp" in amr.
package glewlwydtest
