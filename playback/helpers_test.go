package playback_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/atrest"
)

const pw = "correct horse battery"

// binary is cmd/sshward-playback, built once by TestMain for the tests that
// kill the server with SIGKILL.
var binary string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "sshward-playback-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "sshward-playback")
		if out, err := exec.Command("go", "build", "-o", binary, "github.com/sshward/sshward/cmd/sshward-playback").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build sshward-playback: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// world is a real CA with an auditor (audrey) and an engineer (eve).
type world struct {
	ca       *catest.CA
	auditor  string // session tokens
	engineer string
	// keys encrypt every server's store and bucket when the tests run
	// with SSHWARD_TEST_ENCRYPT=1 (SSHWARD_TEST_ENCRYPT=1 go test
	// ./playback: the whole package again, encrypted at rest); nil
	// otherwise.
	keys *atrest.Keys
}

func newWorld(t testing.TB) *world {
	t.Helper()
	c := catest.New(t, catest.Options{})
	c.AddUser(t, "audrey", pw, []string{"auditors"}, false)
	c.AddUser(t, "eve", pw, []string{"engineers"}, false)
	// Readers hand the playback server reader tokens, never login sessions.
	w := &world{ca: c, auditor: c.ReaderToken(t, c.Login(t, "audrey", pw, "")), engineer: c.ReaderToken(t, c.Login(t, "eve", pw, ""))}
	if os.Getenv("SSHWARD_TEST_ENCRYPT") != "" {
		k, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		w.keys = &atrest.Keys{Recipients: []age.Recipient{k.Recipient()}, Identities: []age.Identity{k}, RecipientStrings: []string{k.Recipient().String()}}
	}
	return w
}

// plaintextOnly skips a test that reads or edits the stored bytes
// directly (in the bucket or the store's files) when the package runs
// encrypted at rest (SSHWARD_TEST_ENCRYPT=1): TestArchiveEncrypted,
// TestRecordingsEncryptedAtRest and the store's tests cover those bytes
// encrypted.
func (w *world) plaintextOnly(t testing.TB) {
	t.Helper()
	if w.keys != nil {
		t.Skip("reads the stored bytes in plaintext; runs without SSHWARD_TEST_ENCRYPT")
	}
}

// playbackToken makes a one-time playback join token for 127.0.0.1.
func (w *world) playbackToken(t testing.TB) string {
	t.Helper()
	res, err := w.ca.Authority.NewJoinToken(context.Background(), ca.JoinTokenRequest{Kind: "playback", Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Token
}

// server is an in-process playback server.
type server struct {
	*playback.Server
	revoked *playback.RevokedHosts
	url     string
	dir     string
	store   *store.Store
	stop    func()
}

type serverOpts struct {
	dir       string
	addr      string // listen address; "" picks a port
	now       func() time.Time
	retention playback.Retention
	indexGate <-chan struct{}  // store.Config.IndexingGate
	objects   playback.Objects // the S3 bucket recordings are archived to
	sweep     time.Duration    // retention sweep interval (default the server's)
	keys      *atrest.Keys     // recordings.encryption: the store and the bucket encrypted
	// replicaSync is Config.ReplicaSync (default the server's).
	replicaSync time.Duration
}

func (w *world) startServer(t testing.TB, o serverOpts) *server {
	t.Helper()
	ctx := context.Background()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.addr == "" {
		o.addr = "127.0.0.1:0"
	}
	if o.keys == nil {
		o.keys = w.keys
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + ln.Addr().String()
	jc := playback.JoinConfig{Dir: o.dir, CAURL: w.ca.URL, Fingerprint: w.ca.Fingerprint, URL: url}
	if _, err := playback.LoadIdentity(o.dir); err != nil {
		jc.Token = w.playbackToken(t)
	}
	id, err := playback.EnsureIdentity(ctx, jc, time.Now())
	if err != nil {
		t.Fatalf("identity: %v", err)
	}
	st, err := store.Open(ctx, store.Config{Dir: o.dir, IndexingGate: o.indexGate, Keys: o.keys})
	if err != nil {
		t.Fatal(err)
	}
	cac, err := playback.NewCAClient(id.CAURL, id.RootPEM)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := playback.NewRevokedHosts(id.CAURL, id.RootPEM, id.Certificate, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := playback.New(playback.Config{Store: st, CA: cac, HostCAs: id.HostCAs, SetHostCAs: id.SetHostCAs,
		TLS: id.TLSConfig(), Now: o.now, Retention: o.retention, RevokedHosts: revoked,
		Objects: playback.EncryptObjects(o.objects, o.keys), ArchiveRetry: 100 * time.Millisecond, SweepInterval: o.sweep,
		URL: id.URL, PeerRootPEM: id.RootPEM, ReplicaSync: o.replicaSync, SpoolKeys: o.keys})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	go revoked.Run(sctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	var once sync.Once
	s := &server{Server: srv, url: url, dir: o.dir, store: st, revoked: revoked}
	s.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
			st.Close()
		})
	}
	t.Cleanup(s.stop)
	return s
}

// proc is sshward-playback running as a child process.
type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

// startProc runs sshward-playback serve on addr with dir and waits until it
// answers /healthz.
func (w *world) startProc(t testing.TB, dir, addr string) *proc {
	t.Helper()
	args := []string{"serve", "--dir", dir, "--listen", addr, "--log-level", "debug"}
	if _, err := playback.LoadIdentity(dir); err != nil {
		args = append(args, "--ca", w.ca.URL, "--fingerprint", w.ca.Fingerprint, "--join-token", w.playbackToken(t))
	}
	cmd := exec.Command(binary, args...)
	p := &proc{cmd: cmd, stderr: new(bytes.Buffer)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	hc := w.httpClient(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshward-playback did not come up: %v\n%s", err, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the process with SIGKILL: no cleanup runs.
func (p *proc) kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
}

// freeAddr returns a loopback address nothing listens on (yet).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// httpClient trusts the CA root, as agents and clients do.
func (w *world) httpClient(t testing.TB) *http.Client {
	t.Helper()
	tc, err := tlsca.ClientConfigFromPEM(w.ca.RootPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 30 * time.Second}
}

// get does a GET with a Bearer token and returns status and body.
func (w *world) get(t testing.TB, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := w.httpClient(t).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func (w *world) getJSON(t testing.TB, url, token string, out any) {
	t.Helper()
	status, body := w.get(t, url, token)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
}

// host is a test agent's identity: a key and a host certificate signed by
// the test CA's host CA (or by any signer given).
type host struct {
	name   string
	cert   *ssh.Certificate
	signer ssh.Signer
}

func newHost(t testing.TB, name string, caSigner ssh.Signer, certType uint32) *host {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key: signer.PublicKey(), Serial: uint64(now.UnixNano()), CertType: certType, KeyId: "host " + name,
		ValidPrincipals: []string{name}, ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
	}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	return &host{name: name, cert: cert, signer: signer}
}

func (h *host) identity() (*ssh.Certificate, ssh.Signer) { return h.cert, h.signer }

// agent is a spool and its shipper, as the host agent runs them.
type agent struct {
	hostName string // the host certificate's name, written into recordings
	spool    *recorder.Spool
	shipper  *recorder.Shipper
	clock    *clock
	cancel   context.CancelFunc
	done     chan struct{}
}

type agentOpts struct {
	spoolDir   string
	chunkBytes int
	client     *http.Client // replaces the shipper's transport
	noShipper  bool
	openFile   func(name string, flag int, perm os.FileMode) (recorder.File, error) // the spool's files (fault injection)
	fallbacks  []string                                                             // more playback servers (ShipperConfig.Fallbacks)
	// sealTo seals the spool from the first recording; either way the
	// agent seals to what a server with keys names (as sshward-agent).
	sealTo []age.Recipient
}

func (w *world) startAgent(t testing.TB, h *host, url string, o agentOpts) *agent {
	t.Helper()
	if o.spoolDir == "" {
		o.spoolDir = filepath.Join(t.TempDir(), "spool")
	}
	clk := &clock{}
	clk.set(time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC))
	var sealMu sync.Mutex
	sealTo := o.sealTo
	sp, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{Dir: o.spoolDir, Now: clk.now, FlushInterval: 20 * time.Millisecond,
		OpenFile: o.openFile, Recipients: func() []age.Recipient {
			sealMu.Lock()
			defer sealMu.Unlock()
			return sealTo
		}})
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{spool: sp, clock: clk, done: make(chan struct{}), hostName: h.name}
	sh, err := recorder.NewShipper(recorder.ShipperConfig{
		Spool: sp, URL: url, RootPEM: w.ca.RootPEM, Cert: h.identity, HTTPClient: o.client,
		PollInterval: 20 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		ChunkBytes: o.chunkBytes, RequestTimeout: 5 * time.Second, Fallbacks: o.fallbacks, FailoverAfter: 2,
		OnRecipients: func(rs []string) {
			parsed, err := atrest.ParseRecipients(rs)
			if err != nil {
				t.Errorf("the server named recipients that do not parse: %v", err)
				return
			}
			sealMu.Lock()
			sealTo = parsed
			sealMu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	a.shipper = sh
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if o.noShipper {
		close(a.done)
	} else {
		go func() {
			defer close(a.done)
			sh.Run(ctx)
		}()
	}
	t.Cleanup(func() { a.stop() })
	return a
}

// stop stops the shipper and closes the spool (an agent shutting down).
func (a *agent) stop() {
	a.cancel()
	<-a.done
	a.spool.Close()
}

// clock is a settable clock for spool event times.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// record writes a session into the spool: output, optionally typed input,
// and returns the live recording.
func (a *agent) create(t testing.TB, id, tier string, recordInput bool) *recorder.Recording {
	t.Helper()
	rec, err := a.spool.Create(context.Background(), recorder.Metadata{
		SessionID: id, Identity: "bob", Principal: "root", KeyID: "bob@local tier=" + tier, Serial: 7, Tier: tier,
		Host: a.hostName, ClientAddr: "192.0.2.1", Kind: recorder.KindShell, RecordInput: recordInput,
	}, recorder.Header{Width: 80, Height: 24, Env: map[string]string{"TERM": "xterm"}})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func closeRec(t testing.TB, r *recorder.Recording) *recorder.Metadata {
	t.Helper()
	status := 0
	m, err := r.Close(context.Background(), recorder.EndInfo{ExitStatus: &status})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitFor polls cond until it holds or the test times out.
func waitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shipped waits until the recording left the spool and returns the cast
// the server holds.
func (w *world) shipped(t testing.TB, a *agent, url, id string) []byte {
	t.Helper()
	waitFor(t, "recording "+id+" shipped", 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(a.spool.Dir(), id+".json"))
		return os.IsNotExist(err)
	})
	status, body := w.get(t, url+"/api/sessions/"+id+"/cast", w.auditor)
	if status != http.StatusOK {
		t.Fatalf("cast of %s: %d %s", id, status, body)
	}
	return body
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkCast fails unless data is a strict asciicast v2 (a repeated or
// skipped chunk shows as a broken line or time going backwards).
func checkCast(t testing.TB, data []byte) {
	t.Helper()
	rd, err := recorder.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("cast does not parse: %v", err)
	}
	for {
		_, err := rd.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("cast does not parse: %v", err)
		}
	}
}
