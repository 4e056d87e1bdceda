package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// TestJoinOnceThenRestartWithoutToken: the first start spends the join
// token; later starts reuse the host key and certificate from the data
// directory, whose files only root can read.
func TestJoinOnceThenRestartWithoutToken(t *testing.T) {
	ca := newFakeCA(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	a := startAgent(t, ca, agentOpts{dataDir: dataDir})
	first := a.srv.HostCertificate()
	if err := a.stop(); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
	b := startAgent(t, ca, agentOpts{dataDir: dataDir, noToken: true})
	second := b.srv.HostCertificate()
	if joins, _ := ca.counts(); joins != 1 {
		t.Errorf("joins = %d, want 1", joins)
	}
	if !bytes.Equal(first.Marshal(), second.Marshal()) {
		t.Error("the restarted agent presents another host certificate")
	}
	st, err := ReadStatus(dataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Joined || st.Tier != api.TierStaging || st.HostCert.Serial != second.Serial || st.HostCert.Expired || st.Revocations == nil {
		t.Errorf("status = %+v %+v", st, st.HostCert)
	}
	var text strings.Builder
	if err := st.WriteText(&text); err != nil || !strings.Contains(text.String(), fmt.Sprintf("serial %d", second.Serial)) {
		t.Errorf("status text %q, %v", text.String(), err)
	}
	if fi, err := os.Stat(dataDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	for _, name := range []string{fileHostKey, fileHostCert, fileUserCA, fileIdentity, fileRevocations, fileSingleUse} {
		fi, err := os.Stat(filepath.Join(dataDir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", name, fi.Mode().Perm(), err)
		}
	}
}

func serveOnce(t *testing.T, cfg Config) error {
	t.Helper()
	srv, err := New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Serve(ctx, ln)
}

func TestServeRefusesToStart(t *testing.T) {
	ca := newFakeCA(t)
	joined := filepath.Join(t.TempDir(), "joined")
	a := startAgent(t, ca, agentOpts{dataDir: joined})
	a.stop()
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"no token, never joined", Config{Tier: api.TierStaging, DataDir: filepath.Join(t.TempDir(), "d"), CA: ca}, ErrNotJoined},
		{"data directory of another tier", Config{Tier: api.TierProduction, DataDir: joined, CA: ca}, ErrTierMismatch},
		{"token for another tier", Config{Tier: api.TierProduction, DataDir: filepath.Join(t.TempDir(), "d"), CA: ca, JoinToken: ca.token(api.TierStaging)}, ErrTierMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := serveOnce(t, tt.cfg); !errors.Is(err, tt.want) {
				t.Fatalf("Serve = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("spent token", func(t *testing.T) {
		tok := ca.token(api.TierStaging)
		startAgent(t, ca, agentOpts{cfg: func(c *Config) { c.JoinToken = tok }})
		err := serveOnce(t, Config{Tier: api.TierStaging, DataDir: filepath.Join(t.TempDir(), "d"), CA: ca, JoinToken: tok})
		if !api.IsCode(err, api.CodeTokenInvalid) {
			t.Fatalf("second join with one token = %v, want token_invalid", err)
		}
	})
	t.Run("config", func(t *testing.T) {
		for _, cfg := range []Config{{}, {Tier: "staging"}, {Tier: "staging", DataDir: "/x"}, {Tier: "Bad Tier", DataDir: "/x", CA: ca}} {
			if _, err := New(cfg); err == nil {
				t.Errorf("New(%+v) accepted", cfg)
			}
		}
	})
}

// TestHostCertRenewal: the agent renews at two thirds of the host
// certificate's lifetime, without a token, and serves the new one.
func TestHostCertRenewal(t *testing.T) {
	ca := newFakeCA(t)
	ca.hostTTL = 3 * time.Second
	a := startAgent(t, ca, agentOpts{})
	first := a.srv.HostCertificate()
	after, before := int64(first.ValidAfter), int64(first.ValidBefore)
	if at, want := renewAt(first), time.Unix(after+(before-after)*2/3, 0); !at.Equal(want) {
		t.Errorf("renewAt = %v, want %v", at, want)
	}
	waitFor(t, func() bool { _, r := ca.counts(); return r >= 1 })
	waitFor(t, func() bool { return a.srv.HostCertificate().Serial != first.Serial })

	// A new connection is verified with the renewed certificate.
	login := currentUser(t)
	k := ca.issue(t, "", certSpec{keyID: "case renewal", principals: []string{login}})
	var seen *ssh.Certificate
	certSigner, _ := ssh.NewCertSigner(k.cert, k.signer)
	checker := &ssh.CertChecker{IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
		return bytes.Equal(auth.Marshal(), ca.hostCA.PublicKey().Marshal())
	}}
	client, err := ssh.Dial("tcp", a.addr, &ssh.ClientConfig{
		User: login, Auth: []ssh.AuthMethod{ssh.PublicKeys(certSigner)},
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			seen, _ = key.(*ssh.Certificate)
			return checker.CheckHostKey(host, remote, key)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	client.Close()
	if seen == nil || seen.Serial == first.Serial {
		t.Errorf("host presented %v, want the renewed certificate", seen)
	}
	if joins, _ := ca.counts(); joins != 1 {
		t.Errorf("joins = %d, want 1 (renewal needs no token)", joins)
	}
}

// TestRevocationCacheWhileCAUnreachable: the last revocation list, cached
// on disk, is enforced by a restarted agent that cannot reach the CA.
func TestRevocationCacheWhileCAUnreachable(t *testing.T) {
	ca := newFakeCA(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	a := startAgent(t, ca, agentOpts{dataDir: dataDir})
	login := currentUser(t)
	revoked := ca.issue(t, "", certSpec{keyID: "case cached revoked", principals: []string{login}})
	fine := ca.issue(t, "", certSpec{keyID: "case cached fine", principals: []string{login}})
	ca.revoke([]uint64{revoked.cert.Serial}, nil)
	waitGeneration(t, a, 1)
	a.stop()

	ca.setDown(true)
	b := startAgent(t, ca, agentOpts{dataDir: dataDir, noToken: true})
	b.logs.find(t, map[string]string{"msg": "agent: revocation list unavailable at start; enforcing the cached one"})
	if _, _, err := goSSHRun(t, ca, b, revoked, login, "true"); err == nil {
		t.Fatal("revoked certificate admitted while the CA is unreachable")
	}
	b.logs.find(t, map[string]string{"msg": "agent: certificate refused", "key_id": "case cached revoked", "reason": reasonRevoked})
	if out, _, err := goSSHRun(t, ca, b, fine, login, "echo ok"); err != nil || out != "ok\n" {
		t.Fatalf("valid certificate refused: %v %q", err, out)
	}
}
