// Package catest runs a real sshward CA in process for tests: real store
// file, real HTTPS with the internal root, real signing keys. It also starts
// stock OpenSSH sshd on loopback (sshd.go) to prove interoperability.
package catest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/server"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
	"github.com/sshward/sshward/ca/tlsca"
)

// Options tunes a test CA; the zero value is the default policy.
type Options struct {
	// Policy is the YAML policy (nil: policy.Default()).
	Policy []byte
	// Now is the CA clock (nil: time.Now).
	Now func() time.Time
	// OIDC enables OIDC login.
	OIDC       ca.OIDCVerifier
	OIDCClient api.OIDCConfig
	// ApprovalPolicy reviews access requests (nil: none).
	ApprovalPolicy ca.ApprovalPolicy
	// Passphrase, when set, encrypts TOTP secrets at rest (ca.SecretBox)
	// as sshward-ca serve does; off by default, its key derivation costs
	// time every test would pay.
	Passphrase []byte
	// RevocationHeartbeat is the revocation stream's heartbeat interval
	// (0: the server's default).
	RevocationHeartbeat time.Duration
	// OnCall is the on-call schedule (nil: none); with OnCallLoop set the
	// CA also runs its shift-end loop (ca.Authority.RunOnCall).
	OnCall     ca.OnCallSchedule
	OnCallLoop *ca.OnCallLoop
	// Keys rotates user-CA keys (nil: the CA cannot rotate).
	Keys ca.KeyRotator
	// Store, when set, is the CA's store (e.g. one of several replicas'
	// on etcd); the caller closes it. Nil: a fresh one (storetest).
	Store *store.DB
}

// CA is a running test CA.
type CA struct {
	URL         string
	Fingerprint string
	RootPEM     []byte
	Dir         string
	Authority   *ca.Authority
	Store       *store.DB
	Policy      *policy.Policy
	UserCAs     map[string]ssh.Signer
	HostCA      ssh.Signer

	run running // what Restart needs (restart.go)
}

// New starts a CA on 127.0.0.1 and stops it on cleanup.
func New(t testing.TB, o Options) *CA {
	t.Helper()
	if o.Policy == nil {
		o.Policy = policy.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	pol, err := policy.Parse(o.Policy)
	if err != nil {
		t.Fatalf("catest: policy: %v", err)
	}
	c := &CA{Dir: t.TempDir(), Policy: pol, UserCAs: map[string]ssh.Signer{}}
	for _, tier := range pol.Tiers {
		c.UserCAs[tier.Name] = NewSigner(t)
	}
	c.HostCA = NewSigner(t)
	c.Store = o.Store
	if c.Store == nil {
		c.Store = storetest.MustOpen(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	root, err := tlsca.CreateRoot(ctx, c.Dir, []byte("catest-passphrase"), "catest root", time.Now())
	if err != nil {
		t.Fatalf("catest: root: %v", err)
	}
	// TLSRoot lets playback servers join this CA (POST /v1/playback/join).
	var box *ca.SecretBox
	if len(o.Passphrase) > 0 {
		if box, err = ca.NewSecretBox(ctx, c.Store, o.Passphrase); err != nil {
			cancel()
			t.Fatalf("catest: secret box: %v", err)
		}
	}
	c.run = running{o: o, root: root, box: box}
	c.start(t, "127.0.0.1:0")
	cl := c.Client(t, "")
	c.RootPEM = nil
	err = cl.Health(ctx)
	cancel()
	if err != nil {
		t.Fatalf("catest: health: %v", err)
	}
	c.RootPEM = cl.RootPEM()
	return c
}

// start runs the authority and its HTTPS server on addr until Stop or
// the test's end.
func (c *CA) start(t testing.TB, addr string) {
	t.Helper()
	o, root := c.run.o, c.run.root
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	c.Authority, err = ca.New(ca.Config{Store: c.Store, Policy: c.Policy, UserCAs: c.UserCAs, HostCA: c.HostCA, TLSRoot: root, Now: o.Now, OIDC: o.OIDC, OIDCClient: o.OIDCClient, ApprovalPolicy: o.ApprovalPolicy, Secrets: c.run.box, OnCall: o.OnCall, Keys: o.Keys})
	if err != nil {
		cancel()
		t.Fatalf("catest: %v", err)
	}
	c.Fingerprint = root.Fingerprint()
	tc, err := root.ServerTLSConfig([]string{"127.0.0.1", "localhost"}, time.Hour, time.Now)
	if err != nil {
		cancel()
		t.Fatalf("catest: tls: %v", err)
	}
	srv, err := server.New(server.Config{Authority: c.Authority, TLS: tc, Now: o.Now, RevocationHeartbeat: o.RevocationHeartbeat})
	if err != nil {
		cancel()
		t.Fatalf("catest: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		cancel()
		t.Fatalf("catest: listen: %v", err)
	}
	c.URL = "https://" + ln.Addr().String()
	done := make(chan error, 2)
	go func() { done <- srv.Serve(ctx, ln) }()
	waits := 1
	if o.OnCallLoop != nil {
		waits++
		a := c.Authority
		go func() { done <- a.RunOnCall(ctx, *o.OnCallLoop) }()
	}
	stopped := false
	c.run.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		for range waits {
			<-done
		}
	}
	t.Cleanup(c.run.stop)
}

// NewSigner returns a fresh in-memory ed25519 signer.
func NewSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Client returns an API client pinned to the CA's root fingerprint.
func (c *CA) Client(t testing.TB, token string) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{URL: c.URL, Fingerprint: c.Fingerprint, Token: token})
	if err != nil {
		t.Fatalf("catest: client: %v", err)
	}
	return cl
}

// AddUser adds a local user and returns its TOTP secret ("" without).
func (c *CA) AddUser(t testing.TB, name, password string, groups []string, withTOTP bool) string {
	t.Helper()
	res, err := c.Authority.AddUser(context.Background(), ca.AddUserRequest{Name: name, Password: password, Groups: groups, TOTP: withTOTP})
	if err != nil {
		t.Fatalf("catest: add user %s: %v", name, err)
	}
	return res.TOTPSecret
}

// Code returns the TOTP code of secret at time at.
func Code(t testing.TB, secret string, at time.Time) string {
	t.Helper()
	code, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatalf("catest: totp: %v", err)
	}
	return code
}

// ReaderToken exchanges a session token for a reader token (the only kind
// the playback server accepts).
func (c *CA) ReaderToken(t testing.TB, token string) string {
	t.Helper()
	resp, err := c.Client(t, token).ReaderToken(context.Background())
	if err != nil {
		t.Fatalf("catest: reader token: %v", err)
	}
	return resp.Token
}

// Login logs a user in over HTTPS and returns the session token.
func (c *CA) Login(t testing.TB, user, password, otp string) string {
	t.Helper()
	resp, err := c.Client(t, "").Login(context.Background(), api.LoginRequest{User: user, Password: password, OTP: otp})
	if err != nil {
		t.Fatalf("catest: login %s: %v", user, err)
	}
	return resp.Token
}
