package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/sshward/sshward/ca/krl"
)

// Renewal under parallel ssh (issue 9, "Parallel ssh never breaks renewal").
//
// Every `ssh` through the Match exec block runs `sshward cert --ensure`, so
// N parallel ssh run N renewals at once when the certificate is about to
// expire. Two rules keep every one of them working:
//
//  1. One renewal at a time, reused by all: renewal runs under an exclusive
//     flock on $SSHWARD_HOME/renew.lock; a caller that waited for it checks
//     again and keeps the certificate the holder just wrote.
//
//  2. The key does not change under a reader. OpenSSH reads IdentityFile's
//     .pub and CertificateFile when it reads its config (right after the
//     Match exec ran), but the private key only when it signs, after the TCP
//     connection and key exchange; it then refuses a private key that does
//     not match the .pub it read ("private key contents do not match
//     public"). No file swap can make that safe if the key changes, so a
//     renewal certifies the key already on disk and replaces only the
//     certificate, in one rename: whichever certificate a reader sees
//     certifies the key it will sign with. A fresh key is made only when
//     no certificate for the current key can still admit anyone (first
//     use, after expiry, a damaged key, or a certificate the tier's KRL
//     revokes, since a revocation may mean the key was stolen), when no ssh
//     can be using the old one; it is written key, .pub, certificate in that
//     order, so a reader that sees the new certificate sees the new key too.

// renewLockWait bounds how long a renewal waits for another one (which may
// be asking for a password on another terminal).
const renewLockWait = 5 * time.Minute

func (h home) renewLockPath() string { return filepath.Join(h.dir, "renew.lock") }

// lockRenewal takes the renewal lock and returns its release. It says so on
// stderr when it has waited a while.
func (h home) lockRenewal(ctx context.Context, stderr io.Writer) (unlock func(), err error) {
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", h.dir, err)
	}
	f, err := os.OpenFile(h.renewLockPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the renewal lock %s: %w", h.renewLockPath(), err)
	}
	ctx, cancel := context.WithTimeout(ctx, renewLockWait)
	defer cancel()
	start := time.Now()
	pause, told := 2*time.Millisecond, false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", h.renewLockPath(), err)
		}
		if !told && time.Since(start) > 2*time.Second {
			told = true
			fmt.Fprintf(stderr, "sshward: waiting for another sshward (pid %s) to finish renewing…\n", lockHolder(f))
		}
		select {
		case <-ctx.Done():
			f.Close()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("another sshward (pid %s) has been renewing for %s (it may be asking for a password on another terminal): finish or stop it, then try again", lockHolder(f), renewLockWait)
			}
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
	// The holder's pid, for the message above (diagnostic only).
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

func lockHolder(f *os.File) string {
	b := make([]byte, 16)
	n, _ := f.ReadAt(b, 0)
	if p, err := strconv.Atoi(strings.TrimSpace(string(b[:n]))); err == nil {
		return strconv.Itoa(p)
	}
	return "?"
}

// keyPair is the tier's key: reused from disk, or fresh (not saved yet).
type keyPair struct {
	priv  ed25519.PrivateKey
	pub   ssh.PublicKey
	fresh bool
}

// loadKey reads the tier's private key and checks that its .pub holds the
// same key.
func (h home) loadKey(tier string) (ed25519.PrivateKey, ssh.PublicKey, error) {
	b, err := os.ReadFile(h.keyPath(tier))
	if err != nil {
		return nil, nil, err
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", h.keyPath(tier), err)
	}
	var priv ed25519.PrivateKey
	switch k := raw.(type) {
	case ed25519.PrivateKey:
		priv = k
	case *ed25519.PrivateKey:
		priv = *k
	default:
		return nil, nil, fmt.Errorf("%s is not an ed25519 key", h.keyPath(tier))
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return nil, nil, err
	}
	pb, err := os.ReadFile(h.keyPath(tier) + ".pub")
	if err != nil {
		return nil, nil, err
	}
	onDisk, _, _, _, err := ssh.ParseAuthorizedKey(pb)
	if err != nil || !bytesEqual(onDisk.Marshal(), pub.Marshal()) {
		return nil, nil, fmt.Errorf("%s.pub does not match its private key", h.keyPath(tier))
	}
	return priv, pub, nil
}

// certMatchesKey reports whether the tier's key files hold the key cert
// certifies (what ssh will sign with).
func (h home) certMatchesKey(tier string, cert *ssh.Certificate) bool {
	_, pub, err := h.loadKey(tier)
	return err == nil && bytesEqual(pub.Marshal(), cert.Key.Marshal())
}

// renewalKey picks the key to certify: the one on disk while a certificate
// for it is still valid at now and not revoked (ssh processes may be about
// to sign with it), a fresh one otherwise. revoked reports whether the
// tier's KRL lists a certificate (true also when the list cannot be read:
// a stolen key is worse than one failed ssh). Call it under the renewal
// lock.
func (h home) renewalKey(tier string, now time.Time, revoked func(*ssh.Certificate) bool) (keyPair, error) {
	if priv, pub, err := h.loadKey(tier); err == nil {
		if cur, err := readCert(h.certPath(tier)); err == nil && bytesEqual(cur.Key.Marshal(), pub.Marshal()) &&
			cur.ValidBefore != ssh.CertTimeInfinity && now.Before(time.Unix(int64(cur.ValidBefore), 0)) && !revoked(cur) {
			return keyPair{priv: priv, pub: pub}, nil
		}
	}
	pubRaw, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return keyPair{}, fmt.Errorf("generate key: %w", err)
	}
	pub, err := ssh.NewPublicKey(pubRaw)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{priv: priv, pub: pub, fresh: true}, nil
}

// saveRenewal writes a renewal: a fresh key first (private key, then .pub),
// the certificate last, each in one rename. A reused key is not written.
func (h home) saveRenewal(tier string, k keyPair, certLine []byte) error {
	if k.fresh {
		block, err := ssh.MarshalPrivateKey(k.priv, "sshward "+tier)
		if err != nil {
			return err
		}
		if err := writeAtomic(h.keyPath(tier), pem.EncodeToMemory(block), 0o600); err != nil {
			return err
		}
		if err := writeAtomic(h.keyPath(tier)+".pub", ssh.MarshalAuthorizedKey(k.pub), 0o600); err != nil {
			return err
		}
	}
	return writeAtomic(h.certPath(tier), certLine, 0o600)
}

// krlRevokes returns a check of certificates against the tier's KRL as the
// CA serves it now.
func krlRevokes(ctx context.Context, c interface {
	KRL(context.Context, string) ([]byte, error)
}, tier string) func(*ssh.Certificate) bool {
	return func(cert *ssh.Certificate) bool {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		b, err := c.KRL(ctx, tier)
		if err != nil {
			return true
		}
		list, err := krl.Parse(b)
		return err != nil || list.IsRevoked(cert)
	}
}
