// Package hostauth authenticates HTTPS requests from a host (an agent or a
// playback server) with its SSH host certificate: the host signs each request
// with its host key and sends the certificate along. No bearer secret is on
// the wire, a captured request is useless after MaxSkew or once its nonce is
// used, and revoking the host certificate revokes the host's API access.
//
// Header, one line (RFC 7235 auth-scheme with auth-params):
//
//	Authorization: SSHWard-Host cert=<base64 certificate wire>, ts=<unix seconds>,
//	                            nonce=<base64url random>, sig=<base64 ssh signature wire>
//
// The signature (RFC 4253 §6.6 / PROTOCOL.certkeys signature format) covers
//
//	"sshward-host-auth-v1\n" + METHOD + "\n" + path?query + "\n" + ts + "\n" +
//	nonce + "\n" + hex(sha256(body))
//
// None of the fields can hold a newline, so the string is unambiguous. RSA
// host keys sign with rsa-sha2-512; SHA-1 "ssh-rsa" signatures are refused.
//
// Host side:
//
//	req, _ := http.NewRequestWithContext(ctx, "POST", caURL+"/v1/host/renew", bytes.NewReader(body))
//	err := hostauth.Sign(req, body, hostCert, hostSigner, time.Now(), rand.Reader)
//
// Server side:
//
//	v := &hostauth.Verifier{HostCAs: trust.HostCAs, IsRevoked: revoked.Has}
//	body, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
//	cert, err := v.Verify(r, body) // cert.ValidPrincipals names the host
//
// Verify accepts only a host certificate (not a user certificate, not a plain
// key) signed by a host CA, inside its validity, not revoked, with a valid
// request signature, a timestamp within MaxSkew, and an unseen nonce.
package hostauth
