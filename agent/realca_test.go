package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
)

// A harness with the real CA: catest runs sshward's CA in process (real
// store, real HTTPS with its own root, real tier keys, the default policy),
// and the agent joins it with a real join token through the real API
// client. Tests sign with the CA's own tier keys (catest.CA.UserCAs) where
// they play an attacker who holds one.

// startRealCA starts a CA with the default policy.
func startRealCA(t testing.TB) *catest.CA {
	t.Helper()
	return catest.New(t, catest.Options{})
}

// caClient is the agent's API client for w, pinned to its root fingerprint
// as sshward-agent --fingerprint does.
func caClient(t testing.TB, w *catest.CA) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{URL: w.URL, Fingerprint: w.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// startRealAgent starts an agent of tier joined to w with a fresh join
// token for the names ssh uses (127.0.0.1, localhost).
func startRealAgent(t testing.TB, w *catest.CA, o agentOpts) *testAgent {
	t.Helper()
	tok, err := w.Authority.NewJoinToken(context.Background(), ca.JoinTokenRequest{Names: []string{"127.0.0.1", "localhost"}, Tier: o.tier})
	if err != nil {
		t.Fatal(err)
	}
	cl := caClient(t, w)
	extra := o.cfg
	o.noToken = true
	o.cfg = func(c *Config) {
		c.CA, c.JoinToken = cl, tok.Token
		if extra != nil {
			extra(c)
		}
	}
	return startAgent(t, nil, o)
}

// realSSHClient is OpenSSH's ssh for an agent of w: known_hosts holds only
// the @cert-authority line of w's host CA.
func realSSHClient(t testing.TB, w *catest.CA, a *testAgent) *sshClient {
	t.Helper()
	home := t.TempDir()
	kh := filepath.Join(home, "known_hosts")
	line := "@cert-authority * " + string(ssh.MarshalAuthorizedKey(w.HostCA.PublicKey()))
	if err := os.WriteFile(kh, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return &sshClient{t: t, home: home, knownHosts: kh, port: a.port}
}

// mint signs tmpl for a fresh ed25519 key with signer, exactly as given
// (no defaults: the attacker chooses every field), and writes key and
// certificate under dir for ssh. After signing, tamper may change the
// certificate (its signature then no longer covers it).
func mint(t testing.TB, dir string, signer ssh.Signer, tmpl ssh.Certificate, tamper func(*ssh.Certificate)) *userKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert := tmpl
	cert.Key = ks.PublicKey()
	if cert.CertType == 0 {
		cert.CertType = ssh.UserCert
	}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	if tamper != nil {
		tamper(&cert)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "id_")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	k := &userKey{signer: ks, cert: &cert, keyPath: f.Name(), certPath: f.Name() + "-cert.pub"}
	if err := os.WriteFile(k.keyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.certPath, ssh.MarshalAuthorizedKey(&cert), 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// auditLog is an Auditor that keeps every event and also writes it to the
// agent's log as LogAuditor does.
type auditLog struct {
	next Auditor
	mu   sync.Mutex // guards evs
	evs  []AuditEvent
}

func (a *auditLog) Audit(ctx context.Context, ev AuditEvent) {
	a.mu.Lock()
	a.evs = append(a.evs, ev)
	a.mu.Unlock()
	if a.next != nil {
		a.next.Audit(ctx, ev)
	}
}

func (a *auditLog) events() []AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]AuditEvent(nil), a.evs...)
}

// find waits (bounded) for an event that matches.
func (a *auditLog) find(t testing.TB, match func(AuditEvent) bool) AuditEvent {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, ev := range a.events() {
			if match(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching audit event in %+v", a.events())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// withAudit makes the agent's Auditor an auditLog over its own logger.
func withAudit(al *auditLog) func(*Config) {
	return func(c *Config) {
		al.next = LogAuditor(c.Logger)
		c.Auditor = al
	}
}

// grepTree lists the files under dir whose content contains s.
func grepTree(t testing.TB, dir, s string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(data), s) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// realGoSSHDial logs in with x/crypto/ssh's client, which offers any
// certificate it is given (OpenSSH's ssh checks the signature first).
func realGoSSHDial(t testing.TB, w *catest.CA, a *testAgent, k *userKey, login string) (*ssh.Client, error) {
	t.Helper()
	certSigner, err := ssh.NewCertSigner(k.cert, k.signer)
	if err != nil {
		t.Fatal(err)
	}
	hostCheck := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
			return bytes.Equal(auth.Marshal(), w.HostCA.PublicKey().Marshal())
		},
	}
	return ssh.Dial("tcp", a.addr, &ssh.ClientConfig{
		User: login, Auth: []ssh.AuthMethod{ssh.PublicKeys(certSigner)},
		HostKeyCallback: hostCheck.CheckHostKey, Timeout: 10 * time.Second,
	})
}
