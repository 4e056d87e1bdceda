package api

import (
	"errors"
	"net/url"
	"strings"
	"time"
)

// Playback servers join the CA once (DESIGN.md "Playback"):
//
//	POST /v1/playback/join   PlaybackJoinRequest -> PlaybackJoinResponse
//
// The token is a one-time join token of kind "playback" (sshward-ca
// join-token --playback NAME). The CA issues a TLS server certificate from its
// internal root for the names the token allows, so clients and agents verify
// the playback server with the root they already pin, and registers URL as
// the playback server GET /v1/trust announces.
const PathPlaybackJoin = "/v1/playback/join"

// PlaybackJoinRequest trades a playback join token for a TLS certificate.
type PlaybackJoinRequest struct {
	Token string `json:"token"`
	// PublicKeyPEM is the server's ECDSA P-256 public key, PKIX "PUBLIC KEY"
	// PEM. The private key never leaves the playback server.
	PublicKeyPEM string `json:"public_key_pem"`
	// URL is the https URL clients and agents reach the server at; its host
	// must be one of the certificate names.
	URL string `json:"url"`
	// Names are the DNS names or IP addresses for the certificate; each must
	// be one the token was made for. Empty means the URL's host.
	Names []string `json:"names,omitempty"`
}

// Check validates the shape of the request (not the token).
func (r *PlaybackJoinRequest) Check() error {
	switch {
	case r.Token == "":
		return errors.New("token is required")
	case r.PublicKeyPEM == "":
		return errors.New("public_key_pem is required")
	case len(r.PublicKeyPEM) > 4096:
		return errors.New("public_key_pem is too long")
	case r.URL == "":
		return errors.New("url is required")
	case len(r.URL) > 1024:
		return errors.New("url is too long")
	case len(r.Names) > 16:
		return errors.New("too many names")
	}
	u, err := url.Parse(r.URL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("url must be an https URL without user, query or fragment, e.g. https://playback.example.com:8444")
	}
	for _, n := range r.Names {
		if n == "" || len(n) > 253 || strings.ContainsAny(n, " /\t\n") {
			return errors.New("names must be host names or IP addresses")
		}
	}
	return nil
}

// PlaybackJoinResponse carries the playback server's TLS identity and the
// host CA it verifies agents' uploads against.
type PlaybackJoinResponse struct {
	// CertificatePEM is the leaf certificate (PEM); serve it with RootPEM
	// after it so that clients pinning the root's fingerprint find it.
	CertificatePEM string `json:"certificate_pem"`
	// RootPEM is the CA's internal X.509 root.
	RootPEM string `json:"root_pem"`
	// HostCA holds the host CA public keys (authorized_keys lines).
	HostCA      []string  `json:"host_ca"`
	ValidBefore time.Time `json:"valid_before"`
}
