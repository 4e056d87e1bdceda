// Package etcdtest runs a real etcd cluster for tests: Debian's
// etcd-server (3.4) members on loopback, each with its own data directory
// under the test's temp dir, stopped when the test ends. make test
// installs etcd-server (.ci/deps).
package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	bin     string
	members []*Member
	// TLS, set by StartTLS: PEM files of the cluster's CA and of a client
	// certificate it accepts; the members then require one.
	TLS *TLSFiles
	hc  *http.Client
}

// TLSFiles are PEM file paths.
type TLSFiles struct{ CA, Cert, Key string }

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string // http://127.0.0.1:PORT
	PeerURL   string
	args      []string
	cmd       *exec.Cmd
	done      chan struct{}
	logs      *syncBuffer
}

// Binary finds etcd on PATH (Debian's etcd-server puts it in /usr/bin).
func Binary() (string, bool) {
	p, err := exec.LookPath("etcd")
	return p, err == nil
}

// Flags are the settings every member gets beyond its addresses: lease
// TTLs survive a leader change, and history older than 10,000 revisions
// is compacted, as a production cluster of the CA should be run.
var Flags = []string{"--experimental-enable-lease-checkpoint", "--auto-compaction-mode=revision",
	"--auto-compaction-retention=10000", "--logger=zap", "--log-level=error"}

// Start runs an n-member cluster and waits until every member answers.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return start(t, n, false)
}

// StartTLS is Start with client TLS: members serve HTTPS with a
// certificate from a fresh CA and accept only clients with a certificate
// from it (--client-cert-auth); c.TLS names the files a client needs.
func StartTLS(t testing.TB, n int) *Cluster {
	t.Helper()
	return start(t, n, true)
}

func start(t testing.TB, n int, withTLS bool) *Cluster {
	t.Helper()
	bin, ok := Binary()
	if !ok {
		t.Fatal("etcd not installed: apt-get install -y etcd-server (make test does this)")
	}
	dir := t.TempDir()
	c := &Cluster{t: t, bin: bin, hc: &http.Client{Timeout: 2 * time.Second}}
	scheme := "http://"
	var tlsFlags []string
	if withTLS {
		c.TLS, c.hc = writeTLS(t, dir)
		scheme = "https://"
		tlsFlags = []string{"--cert-file", filepath.Join(dir, "server.pem"), "--key-file", filepath.Join(dir, "server-key.pem"),
			"--trusted-ca-file", c.TLS.CA, "--client-cert-auth"}
	}
	// Ports are picked free and released before etcd binds them, so another
	// process on the machine can take one in between; a member that loses
	// that race exits with "address already in use" and the whole cluster
	// starts again on fresh ports in a fresh directory.
	for attempt := 1; ; attempt++ {
		err := c.startMembers(filepath.Join(dir, fmt.Sprintf("try%d", attempt)), n, scheme, tlsFlags)
		if err == nil {
			break
		}
		c.Stop()
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("etcdtest: port taken before etcd bound it; new ports (attempt %d)", attempt+1)
	}
	t.Cleanup(c.Stop)
	return c
}

func (c *Cluster) startMembers(dir string, n int, scheme string, tlsFlags []string) error {
	c.members = nil
	var initial []string
	for i := range n {
		m := &Member{Name: fmt.Sprintf("n%d", i+1), ClientURL: scheme + freeAddr(c.t), PeerURL: "http://" + freeAddr(c.t)}
		c.members = append(c.members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.members {
		m.args = append([]string{"--name", m.Name, "--data-dir", filepath.Join(dir, m.Name),
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "sshward-test"}, append(tlsFlags, Flags...)...)
		c.start(m)
	}
	for _, m := range c.members {
		if err := c.waitHealthy(m); err != nil {
			return err
		}
	}
	return nil
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (c *Cluster) start(m *Member) {
	c.t.Helper()
	m.cmd = exec.Command(c.bin, m.args...)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	m.logs = &syncBuffer{}
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	if err := m.cmd.Start(); err != nil {
		c.t.Fatalf("etcdtest: start %s: %v", m.Name, err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(m.cmd, m.done)
}

// waitHealthy polls the member's /health until it reports a leader.
func (c *Cluster) waitHealthy(m *Member) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.hc.Get(m.ClientURL + "/health")
		if err == nil {
			var buf bytes.Buffer
			buf.ReadFrom(resp.Body)
			resp.Body.Close()
			if strings.Contains(buf.String(), `"health":"true"`) {
				return nil
			}
		}
		select {
		case <-m.done:
			return fmt.Errorf("etcdtest: %s exited: %s", m.Name, m.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcdtest: %s not healthy: %v\n%s", m.Name, err, m.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Members returns the members in order.
func (c *Cluster) Members() []*Member { return c.members }

// Kill ends member i with SIGKILL; its data stays.
func (c *Cluster) Kill(i int) {
	m := c.members[i]
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// Restart starts a killed member again on its data and waits for it.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.members[i]
	if m.cmd != nil {
		return
	}
	args := append([]string(nil), m.args...)
	for j, a := range args {
		if a == "new" && j > 0 && args[j-1] == "--initial-cluster-state" {
			args[j] = "existing"
		}
	}
	m.args = args
	c.start(m)
	if err := c.waitHealthy(m); err != nil {
		c.t.Fatal(err)
	}
}

// Leader returns the index of the member that is leader now, or -1.
func (c *Cluster) Leader(ctx context.Context) int {
	hc := c.hc
	for i, m := range c.members {
		if m.cmd == nil {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.ClientURL+"/metrics", nil)
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if strings.Contains(buf.String(), "\netcd_server_is_leader 1") {
			return i
		}
	}
	return -1
}

// Stop ends every member (SIGTERM, then SIGKILL).
func (c *Cluster) Stop() {
	for _, m := range c.members {
		if m.cmd == nil {
			continue
		}
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
			m.cmd.Process.Kill()
			<-m.done
		}
		m.cmd = nil
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
