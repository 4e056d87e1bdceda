package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// hostIdentity is the host key, its current certificate and the user CAs
// the host trusts. It is immutable; renewal swaps in a new one.
type hostIdentity struct {
	key        ssh.Signer       // the host's ed25519 key
	cert       *ssh.Certificate // host certificate for key
	certSigner ssh.Signer       // cert + key: what the SSH handshake presents
	userCAs    map[string]bool  // marshalled user-CA public keys
	tier       string
	limits     map[string]caLimit // by marshalled user-CA key, from the CA (limits.go)
}

// identityFile is fileIdentity: what the certificate does not say itself.
type identityFile struct {
	Tier    string    `json:"tier"`
	Names   []string  `json:"names"`
	Serial  uint64    `json:"serial"`
	Updated time.Time `json:"updated"`
}

func (id *hostIdentity) trusts(caKey ssh.PublicKey) bool {
	return id.userCAs[string(caKey.Marshal())]
}

// loadOrCreateHostKey reads the host key, generating and saving an ed25519
// key on first start.
func loadOrCreateHostKey(cfg *Config) (ssh.Signer, error) {
	path := filepath.Join(cfg.DataDir, fileHostKey)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(cfg.Rand)
		if gerr != nil {
			return nil, fmt.Errorf("agent: generate host key: %w", gerr)
		}
		block, merr := ssh.MarshalPrivateKey(priv, "sshward-agent host key")
		if merr != nil {
			return nil, fmt.Errorf("agent: encode host key: %w", merr)
		}
		if werr := writeFileAtomic(path, pem.EncodeToMemory(block), cfg.Rand); werr != nil {
			return nil, fmt.Errorf("agent: save host key: %w", werr)
		}
		return ssh.NewSignerFromKey(priv)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: read host key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("agent: parse host key %s: %w", path, err)
	}
	return signer, nil
}

// loadIdentity reads the saved host certificate and trust; it returns nil
// and no error when the host has not joined yet.
func loadIdentity(dataDir string, key ssh.Signer) (*hostIdentity, error) {
	certData, err := os.ReadFile(filepath.Join(dataDir, fileHostCert))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: read host certificate: %w", err)
	}
	var meta identityFile
	data, err := os.ReadFile(filepath.Join(dataDir, fileIdentity))
	if err != nil {
		return nil, fmt.Errorf("agent: read host identity: %w", err)
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		return nil, fmt.Errorf("agent: decode %s: %w", fileIdentity, err)
	}
	caData, err := os.ReadFile(filepath.Join(dataDir, fileUserCA))
	if err != nil {
		return nil, fmt.Errorf("agent: read trusted user CAs: %w", err)
	}
	id, err := newIdentity(key, string(certData), strings.Split(string(caData), "\n"), meta.Tier)
	if err != nil {
		return nil, err
	}
	limits, err := loadLimits(dataDir)
	if err != nil {
		return nil, err
	}
	if id.limits, err = indexLimits(limits, id.userCAs); err != nil {
		return nil, err
	}
	return id, nil
}

// newIdentity checks a host certificate and the user-CA lines the CA sent
// and builds the identity from them.
func newIdentity(key ssh.Signer, certLine string, caLines []string, tier string) (*hostIdentity, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(certLine))
	if err != nil {
		return nil, fmt.Errorf("agent: parse host certificate: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	switch {
	case !ok:
		return nil, errors.New("agent: host certificate: not a certificate")
	case cert.CertType != ssh.HostCert:
		return nil, errors.New("agent: host certificate: not a host certificate")
	case !bytes.Equal(cert.Key.Marshal(), key.PublicKey().Marshal()):
		return nil, errors.New("agent: host certificate: issued for another key")
	}
	certSigner, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, fmt.Errorf("agent: host certificate: %w", err)
	}
	cas := make(map[string]bool)
	for _, line := range caLines {
		if strings.TrimSpace(line) == "" {
			continue
		}
		ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("agent: parse user CA key: %w", err)
		}
		cas[string(ca.Marshal())] = true
	}
	if len(cas) == 0 {
		return nil, errors.New("agent: the CA named no user-CA key for this host's tier")
	}
	return &hostIdentity{key: key, cert: cert, certSigner: certSigner, userCAs: cas, tier: tier}, nil
}

// saveIdentity persists a CA answer: trusted user CAs, the identity file,
// and the certificate last, since its presence is what loadIdentity takes
// for "joined".
func saveIdentity(cfg *Config, resp *api.HostCertResponse, tier string) error {
	dir := cfg.DataDir
	if err := writeFileAtomic(filepath.Join(dir, fileUserCA), []byte(strings.Join(resp.UserCA, "\n")+"\n"), cfg.Rand); err != nil {
		return err
	}
	meta, err := json.MarshalIndent(identityFile{Tier: tier, Names: resp.Names, Serial: resp.Serial, Updated: cfg.Now().UTC()}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, fileIdentity), append(meta, '\n'), cfg.Rand); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, fileHostCert), []byte(strings.TrimSpace(resp.Certificate)+"\n"), cfg.Rand)
}

// acceptHostCert checks and saves a CA answer (join or renewal).
func acceptHostCert(cfg *Config, key ssh.Signer, resp *api.HostCertResponse) (*hostIdentity, error) {
	tier := resp.Tier
	if tier == "" {
		tier = cfg.Tier
	}
	if tier != cfg.Tier {
		return nil, fmt.Errorf("%w: the CA issued a %q host certificate, the agent runs for %q", ErrTierMismatch, tier, cfg.Tier)
	}
	id, err := newIdentity(key, resp.Certificate, resp.UserCA, tier)
	if err != nil {
		return nil, err
	}
	// The limits come with every answer; a CA that sends none (from before
	// issue 8) leaves the cached ones in force.
	limits := resp.UserCALimits
	if len(limits) == 0 {
		if limits, err = loadLimits(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	if id.limits, err = indexLimits(limits, id.userCAs); err != nil {
		return nil, err
	}
	if len(resp.UserCALimits) > 0 {
		if err := saveLimits(cfg, resp.UserCALimits); err != nil {
			return nil, fmt.Errorf("agent: save user CA limits: %w", err)
		}
	}
	if err := saveIdentity(cfg, resp, tier); err != nil {
		return nil, fmt.Errorf("agent: save host certificate: %w", err)
	}
	return id, nil
}

// certValid reports whether now lies in cert's validity window.
func certValid(cert *ssh.Certificate, now time.Time) bool {
	u := now.Unix()
	after, before := int64(cert.ValidAfter), int64(cert.ValidBefore)
	if cert.ValidBefore == ssh.CertTimeInfinity {
		before = 1<<63 - 1
	}
	return after >= 0 && before >= 0 && u >= after && u < before
}

// renewAt is when to renew a host certificate: at two thirds of its
// lifetime, which leaves a third for retries while the CA is away. The zero
// time means never (no expiry).
func renewAt(cert *ssh.Certificate) time.Time {
	if cert.ValidBefore == ssh.CertTimeInfinity || cert.ValidBefore > 1<<62 {
		return time.Time{}
	}
	after, before := int64(cert.ValidAfter), int64(cert.ValidBefore)
	if after < 0 || before <= after {
		return time.Unix(before, 0)
	}
	return time.Unix(after+(before-after)*2/3, 0)
}

// establishIdentity loads the host identity or joins the CA for one.
func (s *Server) establishIdentity(ctx context.Context) (*hostIdentity, error) {
	cfg := &s.cfg
	key, err := loadOrCreateHostKey(cfg)
	if err != nil {
		return nil, err
	}
	id, err := loadIdentity(cfg.DataDir, key)
	if err != nil {
		return nil, err
	}
	if id != nil && id.tier != cfg.Tier {
		return nil, fmt.Errorf("%w: %s was joined as %q, the agent runs for %q; use another data directory",
			ErrTierMismatch, cfg.DataDir, id.tier, cfg.Tier)
	}
	if id != nil && certValid(id.cert, cfg.Now()) {
		if cfg.JoinToken != "" {
			s.log.InfoContext(ctx, "agent: already joined; ignoring the join token", "tier", cfg.Tier)
		}
		return id, nil
	}
	if cfg.JoinToken == "" {
		if id != nil {
			// An expired certificate: the CA may still renew it if it
			// went by recently; otherwise a new token is needed.
			if renewed, err := s.renewOnce(ctx, id); err == nil {
				return renewed, nil
			}
		}
		return nil, ErrNotJoined
	}
	resp, err := cfg.CA.Join(ctx, api.JoinRequest{
		Token:     cfg.JoinToken,
		PublicKey: string(ssh.MarshalAuthorizedKey(key.PublicKey())),
		Tier:      cfg.Tier,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: join the CA: %w", err)
	}
	id, err = acceptHostCert(cfg, key, resp)
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "agent: joined the CA", "tier", cfg.Tier, "serial", id.cert.Serial,
		"names", strings.Join(id.cert.ValidPrincipals, ","), "valid_before", time.Unix(int64(id.cert.ValidBefore), 0).UTC())
	return id, nil
}

func (s *Server) renewOnce(ctx context.Context, id *hostIdentity) (*hostIdentity, error) {
	resp, err := s.cfg.CA.RenewHost(ctx, id.cert, id.key, api.RenewRequest{})
	if err != nil {
		return nil, fmt.Errorf("agent: renew host certificate: %w", err)
	}
	return acceptHostCert(&s.cfg, id.key, resp)
}

// renewLoop renews the host certificate at two thirds of its lifetime, or
// sooner onto a new host-CA key (hostcatrust.go), retrying with backoff
// while the CA is unreachable. Owned by Serve; it returns when ctx ends.
func (s *Server) renewLoop(ctx context.Context) {
	const minRetry, maxRetry = 5 * time.Second, 5 * time.Minute
	retry := minRetry
	for {
		id := s.identity()
		at := renewAt(id.cert)
		if due, ok := s.hostCARenewDue(id); ok && (at.IsZero() || due.Before(at)) {
			at = due
		}
		switch s.waitRenewal(ctx, at) {
		case waitDone:
			return
		case waitKicked:
			continue // a new host-CA key: when to renew changed
		}
		renewed, err := s.renewOnce(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			left := time.Unix(int64(id.cert.ValidBefore), 0).Sub(s.cfg.Now())
			s.log.ErrorContext(ctx, "agent: host certificate renewal failed; retrying",
				"err", err, "serial", id.cert.Serial, "expires_in", left.Round(time.Second).String(), "retry_in", retry.String())
			if !sleep(ctx, retry) {
				return
			}
			retry = min(retry*2, maxRetry)
			continue
		}
		s.setIdentity(renewed)
		s.log.InfoContext(ctx, "agent: host certificate renewed", "serial", renewed.cert.Serial,
			"valid_before", time.Unix(int64(renewed.cert.ValidBefore), 0).UTC())
		if next := renewAt(renewed.cert); !next.IsZero() && !next.After(s.cfg.Now()) {
			// A certificate already due for renewal (a CA that renews with
			// a short TTL): back off instead of spinning.
			s.log.WarnContext(ctx, "agent: the renewed host certificate is already due for renewal",
				"serial", renewed.cert.Serial, "retry_in", retry.String())
			if !sleep(ctx, retry) {
				return
			}
			retry = min(retry*2, maxRetry)
			continue
		}
		retry = minRetry
	}
}

// Outcomes of waitRenewal.
const (
	waitElapsed = iota
	waitKicked
	waitDone
)

// waitRenewal waits until at (forever when zero), a renewal onto a new
// host-CA key is scheduled, or ctx ends.
func (s *Server) waitRenewal(ctx context.Context, at time.Time) int {
	var timer <-chan time.Time
	if !at.IsZero() {
		t := time.NewTimer(max(0, at.Sub(s.cfg.Now())))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return waitDone
	case <-s.hostCA.kick:
		return waitKicked
	case <-timer:
		return waitElapsed
	}
}

// sleep waits d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
