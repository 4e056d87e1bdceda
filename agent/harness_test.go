package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// The harness: a fake CA that signs with in-test keys, an agent served on
// 127.0.0.1, user certificates written where OpenSSH's ssh finds them, and
// a log buffer to assert on.

// fakeCA implements CA with in-test host and user CA keys.
type fakeCA struct {
	hostCA ssh.Signer
	userCA map[string]ssh.Signer // by tier
	names  []string

	mu        sync.Mutex // guards the fields below
	hostTTL   time.Duration
	tokens    map[string]string // unused join tokens → tier
	serial    uint64
	joins     int
	renewals  int
	revoked   api.RevocationList
	down      bool // every call fails, as an unreachable CA
	issued    map[uint64]bool
	trustTier map[string][]string // host tier → user CA tiers it trusts
	claims    map[uint64]string   // single-use serial → session id that claimed it (singleuse_test.go)
}

var errCADown = errors.New("fake CA: unreachable")

func newFakeCA(t testing.TB) *fakeCA {
	t.Helper()
	ca := &fakeCA{
		hostCA: newSigner(t), names: []string{"127.0.0.1", "localhost", "web1"},
		userCA:  map[string]ssh.Signer{},
		hostTTL: time.Hour, tokens: map[string]string{}, serial: 1000, issued: map[uint64]bool{},
		trustTier: map[string][]string{
			api.TierStaging:    {api.TierStaging},
			api.TierProduction: {api.TierProduction, api.TierBreakGlass},
		},
	}
	for _, tier := range []string{api.TierStaging, api.TierProduction, api.TierBreakGlass, "foreign"} {
		ca.userCA[tier] = newSigner(t)
	}
	return ca
}

func newSigner(t testing.TB) ssh.Signer {
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

func (ca *fakeCA) token(tier string) string {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	tok := fmt.Sprintf("join-%s-%d", tier, len(ca.tokens)+1)
	ca.tokens[tok] = tier
	return tok
}

func (ca *fakeCA) setDown(down bool) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.down = down
}

func (ca *fakeCA) revoke(serials []uint64, keyIDs []string) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.revoked.Generation++
	ca.revoked.Serials = append(ca.revoked.Serials, serials...)
	ca.revoked.KeyIDs = append(ca.revoked.KeyIDs, keyIDs...)
}

func (ca *fakeCA) counts() (joins, renewals int) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.joins, ca.renewals
}

func (ca *fakeCA) hostCertLocked(pubLine, tier string) (*api.HostCertResponse, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pubLine))
	if err != nil {
		return nil, err
	}
	ca.serial++
	now := time.Now()
	cert := &ssh.Certificate{
		Key: pub, Serial: ca.serial, CertType: ssh.HostCert, KeyId: "host " + tier,
		ValidPrincipals: ca.names,
		ValidAfter:      uint64(now.Add(-time.Second).Unix()),
		ValidBefore:     uint64(now.Add(ca.hostTTL).Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca.hostCA); err != nil {
		return nil, err
	}
	ca.issued[cert.Serial] = true
	var userCA []string
	var limits []api.UserCALimit
	for _, t := range ca.trustTier[tier] {
		line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.userCA[t].PublicKey())))
		userCA = append(userCA, line)
		// The default policy's max_ttl, as the real CA sends it.
		limits = append(limits, api.UserCALimit{Tier: t, UserCA: line, MaxTTL: api.Duration(DefaultMaxTTL(t))})
	}
	return &api.HostCertResponse{
		Certificate: string(ssh.MarshalAuthorizedKey(cert)), Serial: cert.Serial, Names: ca.names,
		Tier: tier, ValidBefore: time.Unix(int64(cert.ValidBefore), 0), UserCA: userCA, UserCALimits: limits,
	}, nil
}

func (ca *fakeCA) Join(ctx context.Context, req api.JoinRequest) (*api.HostCertResponse, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.down {
		return nil, errCADown
	}
	tier, ok := ca.tokens[req.Token]
	if !ok {
		return nil, &api.Error{Code: api.CodeTokenInvalid, Message: "join token is not valid"}
	}
	delete(ca.tokens, req.Token) // one-time
	ca.joins++
	return ca.hostCertLocked(req.PublicKey, tier)
}

func (ca *fakeCA) RenewHost(ctx context.Context, cert *ssh.Certificate, signer ssh.Signer, req api.RenewRequest) (*api.HostCertResponse, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.down {
		return nil, errCADown
	}
	if !ca.issued[cert.Serial] || !bytes.Equal(cert.Key.Marshal(), signer.PublicKey().Marshal()) {
		return nil, &api.Error{Code: api.CodeUnauthenticated, Message: "unknown host"}
	}
	ca.renewals++
	tier := strings.TrimPrefix(cert.KeyId, "host ")
	return ca.hostCertLocked(string(ssh.MarshalAuthorizedKey(signer.PublicKey())), tier)
}

func (ca *fakeCA) HostRevoked(ctx context.Context, tier string, cert *ssh.Certificate, signer ssh.Signer) (*api.RevocationList, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.down {
		return nil, errCADown
	}
	l := ca.revoked
	l.Tier = tier
	l.Serials = append([]uint64(nil), l.Serials...)
	l.KeyIDs = append([]string(nil), l.KeyIDs...)
	return &l, nil
}

// knownHosts writes a known_hosts file holding only the host CA line.
func (ca *fakeCA) knownHosts(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "known_hosts")
	line := "@cert-authority * " + string(ssh.MarshalAuthorizedKey(ca.hostCA.PublicKey()))
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// certSpec describes a user certificate for a test.
type certSpec struct {
	tier       string // user CA that signs: staging, production, break-glass, foreign
	keyID      string
	principals []string
	validAfter time.Time // zero: a minute ago
	ttl        time.Duration
	certType   uint32 // zero: user
	extensions map[string]string
	options    map[string]string
	serial     uint64 // zero: a fresh one
}

// userKey is a client key pair and its certificate, on disk for ssh.
type userKey struct {
	signer   ssh.Signer
	cert     *ssh.Certificate
	keyPath  string
	certPath string
}

var serialMu sync.Mutex
var nextSerial uint64 = 5000

func (ca *fakeCA) issue(t testing.TB, dir string, spec certSpec) *userKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if spec.serial == 0 {
		serialMu.Lock()
		nextSerial++
		spec.serial = nextSerial
		serialMu.Unlock()
	}
	if spec.validAfter.IsZero() {
		spec.validAfter = time.Now().Add(-time.Minute)
	}
	if spec.ttl == 0 {
		spec.ttl = 10 * time.Minute
	}
	if spec.certType == 0 {
		spec.certType = ssh.UserCert
	}
	if spec.tier == "" {
		spec.tier = api.TierStaging
	}
	ext := map[string]string{}
	for k, v := range spec.extensions {
		ext[k] = v
	}
	cert := &ssh.Certificate{
		Key: signer.PublicKey(), Serial: spec.serial, CertType: spec.certType, KeyId: spec.keyID,
		ValidPrincipals: spec.principals,
		ValidAfter:      uint64(spec.validAfter.Unix()),
		ValidBefore:     uint64(time.Now().Add(spec.ttl).Unix()),
		Permissions:     ssh.Permissions{CriticalOptions: spec.options, Extensions: ext},
	}
	if err := cert.SignCert(rand.Reader, ca.userCA[spec.tier]); err != nil {
		t.Fatal(err)
	}
	k := &userKey{signer: signer, cert: cert}
	if dir != "" {
		block, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			t.Fatal(err)
		}
		name := strings.NewReplacer(" ", "_", "/", "_").Replace(spec.keyID)
		k.keyPath = filepath.Join(dir, "id_"+name)
		k.certPath = k.keyPath + "-cert.pub"
		if err := os.WriteFile(k.keyPath, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(k.certPath, ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// stagingExt are the extensions of DESIGN.md's staging tier.
func stagingExt() map[string]string {
	return map[string]string{
		extPermitPTY: "", extPermitPortFwd: "", extPermitAgentFwd: "",
		api.ExtTier: api.TierStaging, api.ExtRecordInput: "no", api.ExtOnRecFail: "open",
	}
}

// productionExt are the extensions of DESIGN.md's production tier.
func productionExt() map[string]string {
	return map[string]string{
		extPermitPTY: "", api.ExtTier: api.TierProduction, api.ExtRecordInput: "yes",
		api.ExtOnRecFail: "closed", api.ExtEndOnExpiry: "",
	}
}

// logBuffer collects JSON log records for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) records() []map[string]any {
	l.mu.Lock()
	data := append([]byte(nil), l.buf.Bytes()...)
	l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(data, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// find waits (bounded) for a record on which every key has the value.
func (l *logBuffer) find(t testing.TB, want map[string]string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, r := range l.records() {
			ok := true
			for k, v := range want {
				if fmt.Sprint(r[k]) != v {
					ok = false
					break
				}
			}
			if ok {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log record with %v; log:\n%s", want, l.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newTestLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	var w io.Writer = lb
	if os.Getenv("SSHWARD_TEST_LOG") != "" {
		w = io.MultiWriter(lb, os.Stderr)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// testAgent is an agent served in process on 127.0.0.1.
type testAgent struct {
	srv     *Server
	addr    string
	port    string
	dataDir string
	logs    *logBuffer
	ca      *fakeCA
	stop    func() error
	// stopWith stops the agent with cause (ErrRestarting: a restart).
	stopWith func(cause error) error
}

type agentOpts struct {
	tier     string
	dataDir  string
	cfg      func(*Config) // last changes to the config
	noToken  bool
	realUser bool // the test account as it is, not testUserLookup's
}

func startAgent(t testing.TB, ca *fakeCA, o agentOpts) *testAgent {
	t.Helper()
	if o.tier == "" {
		o.tier = api.TierStaging
	}
	if o.dataDir == "" {
		o.dataDir = filepath.Join(t.TempDir(), "data")
	}
	log, lb := newTestLogger(t)
	cfg := Config{Tier: o.tier, DataDir: o.dataDir, CA: ca, Logger: log, HostName: "web1",
		RevocationInterval: 200 * time.Millisecond}
	if !o.noToken {
		cfg.JoinToken = ca.token(o.tier)
	}
	if !o.realUser {
		cfg.LookupUser = testUserLookup(t, t.TempDir())
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancelCause := context.WithCancelCause(context.Background())
	cancel := func() { cancelCause(nil) }
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	// Serve establishes the identity before it accepts; wait for it so
	// that tests see a joined agent (or its error).
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("agent stopped: %v\nlog:\n%s", err, lb.String())
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("agent did not start")
	}
	var once sync.Once
	var stopErr error
	a := &testAgent{srv: srv, addr: ln.Addr().String(), dataDir: o.dataDir, logs: lb, ca: ca}
	_, a.port, _ = net.SplitHostPort(a.addr)
	a.stopWith = func(cause error) error {
		once.Do(func() {
			cancelCause(cause)
			select {
			case stopErr = <-done:
			case <-time.After(20 * time.Second):
				stopErr = errors.New("agent did not stop")
			}
		})
		return stopErr
	}
	a.stop = func() error { return a.stopWith(nil) }
	t.Cleanup(func() {
		if err := a.stop(); err != nil && !errors.Is(err, ErrServerClosed) {
			t.Errorf("agent: %v", err)
		}
	})
	return a
}

// currentUser is the local account tests log in as: root on CI, or the
// developer's own account (then the agent serves only that user).
func currentUser(t testing.TB) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// sshClient runs OpenSSH's ssh against an agent.
type sshClient struct {
	t          testing.TB
	home       string
	knownHosts string
	port       string
}

func newSSHClient(t testing.TB, ca *fakeCA, a *testAgent) *sshClient {
	t.Helper()
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("ssh not found: install openssh-client")
	}
	home := t.TempDir()
	return &sshClient{t: t, home: home, knownHosts: ca.knownHosts(t, home), port: a.port}
}

// args are the ssh options that make a run hermetic and strict: no config
// files, no agent, only the given key, the host verified by the CA line.
func (c *sshClient) args(k *userKey, login string, extra ...string) []string {
	args := []string{"-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + c.knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityFile=" + k.keyPath,
		"-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no",
		"-o", "ConnectTimeout=10",
		"-p", c.port}
	if k.certPath != "" {
		args = append(args, "-o", "CertificateFile="+k.certPath)
	}
	args = append(args, extra...)
	return append(args, login+"@127.0.0.1")
}

func (c *sshClient) env() []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "SSH_AUTH_SOCK=") || strings.HasPrefix(e, "HOME=") || strings.HasPrefix(e, "DISPLAY=") {
			continue
		}
		env = append(env, e)
	}
	return append(env, "HOME="+c.home)
}

// run runs ssh with a bound on its time and returns stdout, stderr, error.
func (c *sshClient) run(k *userKey, login string, extra []string, remote ...string) (string, string, error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", append(c.args(k, login, extra...), remote...)...)
	cmd.Env = c.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = nil
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// recordings lists the finished recordings of a spool directory.
func readRecordings(t testing.TB, spoolDir string) map[string]recorder.Metadata {
	t.Helper()
	out := map[string]recorder.Metadata{}
	names, _ := filepath.Glob(filepath.Join(spoolDir, "*.json"))
	for _, n := range names {
		var m recorder.Metadata
		data, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		out[m.SessionID] = m
	}
	return out
}

// waitRecording waits (bounded) for a finished recording that matches.
func waitRecording(t testing.TB, spoolDir string, match func(recorder.Metadata) bool) recorder.Metadata {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, m := range readRecordings(t, spoolDir) {
			if m.Finished && match(m) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no finished recording matches in %s: %v", spoolDir, readRecordings(t, spoolDir))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readCast parses a cast file strictly with the recorder's reader.
func readCast(t testing.TB, path string) (recorder.Header, []recorder.Event) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := recorder.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var evs []recorder.Event
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return rd.Header(), evs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		evs = append(evs, e)
	}
}

func castPath(spoolDir, id string) string { return filepath.Join(spoolDir, id+".cast") }

// output joins the data of the output events.
func output(evs []recorder.Event) string {
	var b strings.Builder
	for _, e := range evs {
		if e.Code == recorder.CodeOutput {
			b.WriteString(e.Data)
		}
	}
	return b.String()
}

// goSSHDial logs in with x/crypto/ssh's client, verifying the host by its
// certificate like OpenSSH with an @cert-authority line. banners collects
// what the server shows before authentication.
func goSSHDial(t testing.TB, ca *fakeCA, a *testAgent, k *userKey, login string, banners *strings.Builder) (*ssh.Client, error) {
	t.Helper()
	certSigner, err := ssh.NewCertSigner(k.cert, k.signer)
	if err != nil {
		t.Fatal(err)
	}
	hostCheck := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
			return bytes.Equal(auth.Marshal(), ca.hostCA.PublicKey().Marshal())
		},
	}
	cfg := &ssh.ClientConfig{
		User:            login,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(certSigner)},
		HostKeyCallback: hostCheck.CheckHostKey,
		Timeout:         10 * time.Second,
		BannerCallback: func(m string) error {
			if banners != nil {
				banners.WriteString(m)
			}
			return nil
		},
	}
	return ssh.Dial("tcp", a.addr, cfg)
}

// goSSHRun runs one command with x/crypto/ssh's client; errOut holds the
// banners and stderr.
func goSSHRun(t testing.TB, ca *fakeCA, a *testAgent, k *userKey, login, command string) (out, errOut string, err error) {
	t.Helper()
	var banners strings.Builder
	client, err := goSSHDial(t, ca, a, k, login, &banners)
	if err != nil {
		return "", banners.String() + "Permission denied: " + err.Error(), err
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return "", banners.String(), err
	}
	defer sess.Close()
	var o, e bytes.Buffer
	sess.Stdout, sess.Stderr = &o, &e
	err = sess.Run(command)
	return o.String(), banners.String() + e.String(), err
}

// testUserLookup is a Config.LookupUser for tests: the current account, but
// with home and /bin/sh, so that tests neither touch the real home nor pay
// for its shell start-up files; other names are looked up for real.
func testUserLookup(t testing.TB, home string) func(string) (*User, error) {
	t.Helper()
	me := currentUser(t)
	return func(name string) (*User, error) {
		u, err := LookupUser(name)
		if err != nil || name != me {
			return u, err
		}
		u.Home, u.Shell = home, "/bin/sh"
		return u, nil
	}
}
