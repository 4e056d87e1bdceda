package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/tlsca"
)

// playbackCertTTL is the life of a playback server's TLS certificate. The
// server renews by joining again with a new token; a year keeps that a
// yearly chore while the root (ten years) bounds it anyway.
const playbackCertTTL = 365 * 24 * time.Hour

// JoinPlayback exchanges a one-time playback join token for a TLS server
// certificate from the CA's internal root, and registers the server's URL
// (store meta "playback_url", what PlaybackURL and GET /v1/trust return) in
// the same transaction that consumes the token. The certificate names must
// be names the token was made for: a leaked token must not buy a
// certificate for the CA's own name, which clients verify with the same
// root.
func (a *Authority) JoinPlayback(ctx context.Context, req api.PlaybackJoinRequest, clientAddr string) (*api.PlaybackJoinResponse, error) {
	ev := store.AuditEvent{Type: "playback.join", ClientAddr: clientAddr}
	resp, err := a.joinPlayback(ctx, req, clientAddr, &ev)
	if err != nil {
		a.auditRefusal(ctx, ev, err)
		return nil, err
	}
	return resp, nil
}

func (a *Authority) joinPlayback(ctx context.Context, req api.PlaybackJoinRequest, clientAddr string, ev *store.AuditEvent) (*api.PlaybackJoinResponse, error) {
	if err := req.Check(); err != nil {
		return nil, badRequest(err, "playback join request: %v", err)
	}
	root := a.cfg.TLSRoot
	if root == nil {
		return nil, refuse(api.CodeInternal, http.StatusServiceUnavailable, nil, "this CA was started without its TLS root and cannot certify a playback server: start it with sshward-ca serve")
	}
	pub, err := parsePlaybackKey(req.PublicKeyPEM)
	if err != nil {
		return nil, err
	}
	id, now := tokenID(req.Token), a.cfg.Now()
	tok, err := a.liveJoinToken(ctx, id, now, store.JoinKindPlayback, "sshward-ca join-token --playback NAME")
	if tok != nil {
		ev.Subject, ev.Actor = firstName(tok.Names), "playback:"+firstName(tok.Names)
	}
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(req.URL) // Check parsed it
	names := req.Names
	if len(names) == 0 {
		names = []string{u.Hostname()}
	}
	names = cleanList(names)
	for _, n := range names {
		if !slices.ContainsFunc(tok.Names, func(allowed string) bool { return sameHostName(allowed, n) }) {
			return nil, refuse(api.CodeForbidden, http.StatusForbidden, nil,
				"this join token allows the names %s, not %q: advertise one of them (--advertise https://NAME:PORT) or ask for a token with --playback %s",
				strings.Join(tok.Names, ", "), n, n)
		}
	}
	if !slices.ContainsFunc(names, func(n string) bool { return sameHostName(n, u.Hostname()) }) {
		return nil, badRequest(nil, "the url's host %q is not among the certificate names %s", u.Hostname(), strings.Join(names, ", "))
	}
	leaf, err := root.IssueServer(names, pub, playbackCertTTL, now)
	if err != nil {
		return nil, badRequest(err, "cannot certify these names: %s", trimPkg(err))
	}
	playbackURL := strings.TrimRight(req.URL, "/")
	evCopy := *ev
	evCopy.Outcome = "ok"
	evCopy.Details = map[string]string{
		"url": playbackURL, "names": joinComma(names),
		"tls_serial": leaf.SerialNumber.Text(16), "valid_before": leaf.NotAfter.UTC().Format(time.RFC3339),
	}
	err = a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		if _, err := tx.ConsumeJoinToken(id, now); err != nil {
			return ErrTokenInvalid
		}
		if err := tx.PutMeta(metaPlaybackURL, []byte(playbackURL)); err != nil {
			return err
		}
		if err := addReplica(tx, metaPlaybackReplicas, playbackURL); err != nil {
			return err
		}
		return a.appendAudit(tx, evCopy)
	})
	if errors.Is(err, ErrTokenInvalid) {
		return nil, refuse(api.CodeTokenInvalid, http.StatusUnauthorized, err, "the join token is unknown, already used or expired: ask for a new one (sshward-ca join-token --playback NAME)")
	}
	if err != nil {
		return nil, fmt.Errorf("ca: register playback server %q: %w", firstName(names), err)
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "playback server joined", slog.String("url", playbackURL),
		slog.String("names", joinComma(names)), slog.Time("valid_before", leaf.NotAfter))
	hostCA := make([]string, 0, 1)
	for _, k := range a.HostCAKeys() {
		hostCA = append(hostCA, authorizedKey(k))
	}
	return &api.PlaybackJoinResponse{
		CertificatePEM: string(tlsca.EncodePEM(leaf)),
		RootPEM:        string(tlsca.EncodePEM(root.Cert())),
		HostCA:         hostCA,
		ValidBefore:    leaf.NotAfter.UTC(),
	}, nil
}

// parsePlaybackKey reads an ECDSA P-256 PKIX public key in PEM, the one key
// type every TLS client handles well.
func parsePlaybackKey(s string) (*ecdsa.PublicKey, error) {
	block, rest := pem.Decode([]byte(s))
	if block == nil || block.Type != "PUBLIC KEY" || len(trimSpace(rest)) > 0 {
		return nil, badRequest(nil, "public_key_pem must be one PEM \"PUBLIC KEY\" block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, badRequest(err, "public_key_pem is not a PKIX public key")
	}
	ec, ok := k.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, refuse(api.CodeKeyType, http.StatusBadRequest, nil, "the playback server key must be ECDSA P-256")
	}
	return ec, nil
}

// sameHostName compares DNS names case-insensitively and IP addresses by
// value ("::1" and "0:0::1" are one address).
func sameHostName(a, b string) bool {
	if ia, ib := net.ParseIP(a), net.ParseIP(b); ia != nil || ib != nil {
		return ia != nil && ib != nil && ia.Equal(ib)
	}
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}
