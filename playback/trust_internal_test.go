package playback

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback/store"
)

type trustCA struct {
	hostCA string
	err    error
}

func (c *trustCA) Session(context.Context, string) (*api.SessionInfo, error) { return nil, c.err }
func (c *trustCA) Login(context.Context, api.LoginRequest) (*api.LoginResponse, error) {
	return nil, c.err
}
func (c *trustCA) Logout(context.Context, string) error { return c.err }
func (c *trustCA) Trust(context.Context) (*api.TrustResponse, error) {
	if c.err != nil {
		return nil, c.err
	}
	return &api.TrustResponse{HostCA: c.hostCA}, nil
}

func authorizedKey(t *testing.T) (string, ssh.PublicKey) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))), k
}

// TestTrustRefresh: a rotated host CA reaches the server (and its saved
// copy) without a restart, and the trust material recordings are checked
// against with it; a CA that cannot be reached changes nothing.
func TestTrustRefresh(t *testing.T) {
	ctx := context.Background()
	oldLine, oldKey := authorizedKey(t)
	newLine, newKey := authorizedKey(t)
	id := &Identity{Dir: t.TempDir()}
	if err := id.SetHostCAs([]string{oldLine}); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ca := &trustCA{err: errors.New("CA down")}
	s, err := New(Config{Store: st, CA: ca, HostCAs: id.HostCAs, SetHostCAs: id.SetHostCAs})
	if err != nil {
		t.Fatal(err)
	}
	same := func(want ssh.PublicKey) bool {
		keys := id.HostCAs()
		return len(keys) == 1 && string(keys[0].Marshal()) == string(want.Marshal())
	}
	s.refreshTrust(ctx)
	if !same(oldKey) {
		t.Fatal("an unreachable CA changed the host CA keys")
	}
	ca.err, ca.hostCA = nil, newLine
	s.refreshTrust(ctx)
	if !same(newKey) {
		t.Fatal("the rotated host CA key was not taken")
	}
	saved, err := os.ReadFile(filepath.Join(id.Dir, hostCAFile))
	if err != nil || strings.TrimSpace(string(saved)) != newLine {
		t.Fatalf("saved host CA %q, %v", saved, err)
	}
	// The refresh fed the trust material recordings are checked against:
	// with the CA down now, it is what the server has.
	ca.err = errors.New("CA down again")
	if tr, err := s.trust(ctx); err != nil || tr.HostCA != newLine {
		t.Fatalf("trust after a refresh, CA down: %+v %v; want the refreshed material", tr, err)
	}
	ca.err = nil
	ca.hostCA = "not a key"
	s.refreshTrust(ctx)
	if !same(newKey) {
		t.Fatal("a malformed host CA key replaced the good one")
	}
}
