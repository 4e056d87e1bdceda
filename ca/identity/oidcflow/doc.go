// Package oidcflow runs the client side of an OpenID Connect login for
// `sshward login --oidc`: the authorization code flow with PKCE on a
// loopback redirect (RFC 8252, RFC 7636) when a browser is at hand, or the
// device authorization grant (RFC 8628) on a headless machine. Both return
// the raw ID token, which the CLI sends to the CA (package identity checks
// it there).
//
//	raw, err := oidcflow.AuthCode(ctx, oidcflow.Config{
//		Issuer:      "https://idp.example.com",
//		ClientID:    "sshward",
//		Out:         os.Stderr,
//		OpenBrowser: openBrowser, // nil: print the URL only
//	})
//
//	raw, err := oidcflow.Device(ctx, oidcflow.Config{Issuer: iss, ClientID: "sshward", Out: os.Stderr})
//
// Register the client at the provider as a public client with the redirect
// URI http://127.0.0.1/callback. RFC 8252 §7.3 says the provider must accept
// any port on a loopback redirect; providers that compare the URI exactly
// (glewlwyd 2.7 does) need a fixed port: set ListenAddr and register
// http://127.0.0.1:PORT/callback.
package oidcflow
