// Package webtest runs the reader side of sshward in process for tests of
// the web UI and the sshward CLI: a real CA (ca/catest) with an auditor and
// an engineer, a real playback server that joined it (so GET /v1/trust
// names it) serving the embedded web UI over HTTPS, and a host that records
// sessions into a spool and ships them with recorder.Shipper, as the agent
// does. Nothing is faked: recordings reach the server through the ingest
// API, signed with a host certificate from the CA's host CA.
package webtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/store"
	"github.com/sshward/sshward/playback/web"
	"github.com/sshward/sshward/recorder"
)

// The accounts every Stack has, all with Password and no TOTP.
const (
	Auditor  = "audrey" // group auditors: may read recordings
	Engineer = "eve"    // group engineers: refused
	Password = "correct horse battery"
)

// Stack is a running CA, playback server and recording host.
type Stack struct {
	CA *catest.CA
	// URL is the playback server's base URL (https://127.0.0.1:PORT); the
	// CA announces it in GET /v1/trust.
	URL    string
	Server *playback.Server
	Store  *store.Store
	// AuditorToken and EngineerToken are reader tokens (what the playback
	// server accepts); auditorLogin and engineerLogin the login sessions
	// they were made from (what `sshward login` keeps).
	AuditorToken, EngineerToken string
	auditorLogin, engineerLogin string

	hostCert   *ssh.Certificate
	hostSigner ssh.Signer
	spool      *recorder.Spool

	mu    sync.Mutex // guards clock, Server and stopServe
	clock time.Time  // the spool's clock: event times are set by Session steps

	newServer func() (*playback.Server, error)
	stopServe func() error // stops the running server (nil: stopped)
}

// New starts a Stack and stops it when the test ends.
func New(t testing.TB) *Stack {
	t.Helper()
	ctx := context.Background()
	s := &Stack{CA: catest.New(t, catest.Options{}), clock: time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)}
	s.CA.AddUser(t, Auditor, Password, []string{"auditors"}, false)
	s.CA.AddUser(t, Engineer, Password, []string{"engineers"}, false)
	// Readers hand the playback server reader tokens, never login sessions.
	s.auditorLogin, s.engineerLogin = s.CA.Login(t, Auditor, Password, ""), s.CA.Login(t, Engineer, Password, "")
	s.AuditorToken, s.EngineerToken = s.CA.ReaderToken(t, s.auditorLogin), s.CA.ReaderToken(t, s.engineerLogin)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.URL = "https://" + ln.Addr().String()
	tok, err := s.CA.Authority.NewJoinToken(ctx, ca.JoinTokenRequest{Kind: "playback", Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatalf("webtest: playback join token: %v", err)
	}
	dir := t.TempDir()
	id, err := playback.EnsureIdentity(ctx, playback.JoinConfig{Dir: dir, CAURL: s.CA.URL, Fingerprint: s.CA.Fingerprint,
		Token: tok.Token, URL: s.URL}, time.Now())
	if err != nil {
		t.Fatalf("webtest: join the CA: %v", err)
	}
	if s.Store, err = store.Open(ctx, store.Config{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	cac, err := playback.NewCAClient(id.CAURL, id.RootPEM)
	if err != nil {
		t.Fatal(err)
	}
	ui, err := web.New(web.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.newServer = func() (*playback.Server, error) {
		return playback.New(playback.Config{Store: s.Store, CA: cac, HostCAs: id.HostCAs, SetHostCAs: id.SetHostCAs,
			TLS: id.TLSConfig(), UI: ui})
	}
	s.serve(t, ln)

	s.newHost(t)
	s.spool, err = recorder.OpenSpool(ctx, recorder.SpoolConfig{Dir: filepath.Join(t.TempDir(), "spool"), Now: s.now,
		FlushInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sh, err := recorder.NewShipper(recorder.ShipperConfig{Spool: s.spool, URL: s.URL, RootPEM: s.CA.RootPEM,
		Cert: func() (*ssh.Certificate, ssh.Signer) { return s.hostCert, s.hostSigner },
		// Now is the wall clock: it signs requests the server checks
		// against its own; the spool's clock only sets event times.
		PollInterval: 20 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	shipCtx, stopShip := context.WithCancel(ctx)
	shipped := make(chan struct{})
	go func() {
		defer close(shipped)
		sh.Run(shipCtx)
	}()
	t.Cleanup(func() {
		stopShip()
		<-shipped
		s.spool.Close()
		s.StopServer(t)
		s.Store.Close()
	})
	return s
}

// serve starts a playback server (a new Server, as a restarted process
// has) on ln.
func (s *Stack) serve(t testing.TB, ln net.Listener) {
	t.Helper()
	srv, err := s.newServer()
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	s.mu.Lock()
	s.Server = srv
	s.stopServe = func() error {
		stop()
		return <-served
	}
	s.mu.Unlock()
}

// StopServer stops the playback server the way a restart does: its
// listener closes and open streams (live follows) are cut after the
// server's shutdown grace. The store stays open for StartServer.
func (s *Stack) StopServer(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	stop := s.stopServe
	s.stopServe = nil
	s.mu.Unlock()
	if stop == nil {
		return
	}
	if err := stop(); err != nil {
		t.Errorf("webtest: serve: %v", err)
	}
}

// StartServer starts a new playback server on the stopped one's address.
func (s *Stack) StartServer(t testing.TB) {
	t.Helper()
	addr := strings.TrimPrefix(s.URL, "https://")
	var ln net.Listener
	var err error
	// The port was ours a moment ago; a dial in flight may hold it briefly.
	for range 100 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("webtest: listen again on %s: %v", addr, err)
	}
	s.serve(t, ln)
}

func (s *Stack) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock
}

func (s *Stack) advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock = s.clock.Add(d)
}

// newHost makes the recording host's key and certificate, signed by the
// CA's host CA as a join would.
func (s *Stack) newHost(t testing.TB) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if s.hostSigner, err = ssh.NewSignerFromKey(priv); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s.hostCert = &ssh.Certificate{Key: s.hostSigner.PublicKey(), Serial: uint64(now.UnixNano()), CertType: ssh.HostCert,
		KeyId: "host web1.prod", ValidPrincipals: []string{"web1.prod"},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix())}
	if err := s.hostCert.SignCert(rand.Reader, s.CA.HostCA); err != nil {
		t.Fatal(err)
	}
}

// userCert is the user certificate an agent would have admitted for sess:
// signed by the CA's user CA for the tier, with the key id, principal and
// request extensions the recording's metadata names (the playback server
// checks them against each other).
func (s *Stack) userCert(t testing.TB, sess Session, serial uint64) string {
	t.Helper()
	caSigner, ok := s.CA.UserCAs[sess.Tier]
	if !ok {
		t.Fatalf("webtest: the CA has no tier %q", sess.Tier)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	ext := map[string]string{"permit-pty": "", api.ExtTier: sess.Tier}
	if sess.RequestID != "" {
		ext[api.ExtRequestID] = sess.RequestID
	}
	if sess.Reason != "" {
		ext[api.ExtReason] = sess.Reason
	}
	if len(sess.Approvers) > 0 {
		ext[api.ExtApprovers] = strings.Join(sess.Approvers, ",")
	}
	// Valid over the spool's clock, which starts in the past.
	start := s.now().Add(-time.Hour)
	cert := &ssh.Certificate{Key: key, Serial: serial, CertType: ssh.UserCert, KeyId: sess.User + "@local tier=" + sess.Tier,
		ValidPrincipals: []string{"root"}, ValidAfter: uint64(start.Unix()), ValidBefore: uint64(start.Add(48 * time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: ext}}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))
}

// Step is one event of a recorded session: After this long (recording
// time), the session prints Output or the user types Input (recorded when
// the tier records input) or a Marker is set.
type Step struct {
	After  time.Duration
	Output string
	Input  string
	Marker string
}

// Session is a recording to make. Zero fields get defaults: user alice,
// principal root, tier production, a shell.
type Session struct {
	ID        string
	User      string
	Tier      string
	RequestID string
	Reason    string
	Approvers []string
	Steps     []Step
}

func (s *Stack) create(t testing.TB, sess Session) *recorder.Recording {
	t.Helper()
	if sess.User == "" {
		sess.User = "alice"
	}
	if sess.Tier == "" {
		sess.Tier = "production"
	}
	const serial = 18446744073709551557
	rec, err := s.spool.Create(context.Background(), recorder.Metadata{
		SessionID: sess.ID, Identity: sess.User, Principal: "root", KeyID: sess.User + "@local tier=" + sess.Tier,
		Serial: serial, Tier: sess.Tier, Host: "web1.prod", ClientAddr: "192.0.2.7:50022",
		RequestID: sess.RequestID, Reason: sess.Reason, Approvers: sess.Approvers,
		UserCert: s.userCert(t, sess, serial),
		Kind:     recorder.KindShell, RecordInput: sess.Tier == "break-glass" || sess.Tier == "production",
	}, recorder.Header{Width: 80, Height: 24, Env: map[string]string{"TERM": "xterm-256color", "SHELL": "/bin/bash"}})
	if err != nil {
		t.Fatalf("webtest: create recording: %v", err)
	}
	s.play(t, rec, sess.Steps)
	return rec
}

func (s *Stack) play(t testing.TB, rec *recorder.Recording, steps []Step) {
	t.Helper()
	for _, st := range steps {
		s.advance(st.After)
		var err error
		switch {
		case st.Output != "":
			err = rec.Output([]byte(st.Output))
		case st.Input != "":
			err = rec.Input([]byte(st.Input))
		case st.Marker != "":
			err = rec.Marker(st.Marker)
		}
		if err != nil {
			t.Fatalf("webtest: record: %v", err)
		}
	}
}

// Record makes a finished recording and waits until the playback server
// holds it, verified, with its text searchable. Event times are the steps'
// After sums (the spool clock), so tests know where each word is.
func (s *Stack) Record(t testing.TB, sess Session) {
	t.Helper()
	rec := s.create(t, sess)
	status := 0
	s.advance(100 * time.Millisecond)
	if _, err := rec.Close(context.Background(), recorder.EndInfo{ExitStatus: &status}); err != nil {
		t.Fatal(err)
	}
	s.waitSession(t, sess.ID, 30*time.Second, func(d map[string]any) bool { return d["integrity"] == "verified" })
}

// RecordMany makes finished recordings one after the other without waiting
// for each, then waits until the server holds them all verified. A session
// starts at the spool clock when it is made and its Steps move the clock on,
// so sessions made after ones without Steps share their start time.
func (s *Stack) RecordMany(t testing.TB, sessions []Session) {
	t.Helper()
	status := 0
	for _, sess := range sessions {
		rec := s.create(t, sess)
		if _, err := rec.Close(context.Background(), recorder.EndInfo{ExitStatus: &status}); err != nil {
			t.Fatal(err)
		}
	}
	for _, sess := range sessions {
		s.waitSession(t, sess.ID, time.Minute, func(d map[string]any) bool { return d["integrity"] == "verified" })
	}
}

// Ingest ships a cast made elsewhere (a generated 100 MB one, say) as a
// finished recording and waits until the server holds it verified. It puts
// the cast and its metadata into the spool the way a finished Recording
// leaves them (recorder's documented layout: DIR/<id>.cast, DIR/<id>.json),
// so the shipper sends it like any other.
func (s *Stack) Ingest(t testing.TB, sess Session, cast []byte) {
	t.Helper()
	if sess.User == "" {
		sess.User = "alice"
	}
	if sess.Tier == "" {
		sess.Tier = "production"
	}
	sum := sha256.Sum256(cast)
	start := s.now()
	status := 0
	m := recorder.Metadata{SessionID: sess.ID, Identity: sess.User, Principal: "root", KeyID: sess.User + "@local tier=" + sess.Tier,
		Serial: 7, Tier: sess.Tier, UserCert: s.userCert(t, sess, 7),
		RequestID: sess.RequestID, Reason: sess.Reason, Approvers: sess.Approvers, Host: "web1.prod", ClientAddr: "192.0.2.7:50022", Kind: recorder.KindShell,
		Start: start, End: start.Add(time.Hour), ExitStatus: &status, BytesOut: int64(len(cast)), CastBytes: int64(len(cast)),
		SHA256: hex.EncodeToString(sum[:]), Complete: true, Finished: true}
	meta, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	dir := s.spool.Dir()
	if err := os.WriteFile(filepath.Join(dir, sess.ID+".cast"), cast, 0o600); err != nil {
		t.Fatal(err)
	}
	// The metadata appears last and whole: the shipper lists the spool by it.
	tmp := filepath.Join(dir, ".tmp-"+sess.ID)
	if err := os.WriteFile(tmp, meta, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, sess.ID+".json")); err != nil {
		t.Fatal(err)
	}
	s.waitSession(t, sess.ID, 2*time.Minute, func(d map[string]any) bool { return d["integrity"] == "verified" })
}

// Live is a recording still being made.
type Live struct {
	s   *Stack
	rec *recorder.Recording
}

// StartLive starts a recording and waits until the server lists it live.
func (s *Stack) StartLive(t testing.TB, sess Session) *Live {
	t.Helper()
	rec := s.create(t, sess)
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	s.waitSession(t, sess.ID, 30*time.Second, func(d map[string]any) bool { return d["live"] == true })
	return &Live{s: s, rec: rec}
}

// Add records more steps; the shipper streams them within a poll interval.
func (l *Live) Add(t testing.TB, steps ...Step) {
	t.Helper()
	l.s.play(t, l.rec, steps)
	if err := l.rec.Flush(); err != nil {
		t.Fatal(err)
	}
}

// Finish ends the session; the server has it verified when Finish returns.
func (l *Live) Finish(t testing.TB) {
	t.Helper()
	status := 0
	l.s.advance(100 * time.Millisecond)
	if _, err := l.rec.Close(context.Background(), recorder.EndInfo{ExitStatus: &status}); err != nil {
		t.Fatal(err)
	}
	l.s.waitSession(t, l.rec.SessionID(), 30*time.Second, func(d map[string]any) bool { return d["integrity"] == "verified" })
}

// WaitSearch waits until a search for word finds session id (the index is
// built in the background after each chunk).
func (s *Stack) WaitSearch(t testing.TB, id, word string) {
	t.Helper()
	s.wait(t, "search for "+word+" to find "+id, 2*time.Minute, func() bool {
		var res struct {
			Hits []struct {
				SessionID string `json:"session_id"`
			} `json:"hits"`
		}
		if s.getJSON("/api/search?"+url.Values{"q": {word}}.Encode(), &res) != nil {
			return false
		}
		for _, h := range res.Hits {
			if h.SessionID == id {
				return true
			}
		}
		return false
	})
}

func (s *Stack) waitSession(t testing.TB, id string, within time.Duration, cond func(map[string]any) bool) {
	t.Helper()
	s.wait(t, "session "+id+" on the playback server", within, func() bool {
		var d map[string]any
		return s.getJSON("/api/sessions/"+url.PathEscape(id), &d) == nil && cond(d)
	})
}

func (s *Stack) wait(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("webtest: timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// HTTPClient trusts the CA root, as the CLI does.
func (s *Stack) HTTPClient() *http.Client {
	tc, err := tlsca.ClientConfigFromPEM(s.CA.RootPEM)
	if err != nil {
		panic(err) // the root came from the running CA
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 30 * time.Second}
}

// getJSON reads an API path as the auditor.
func (s *Stack) getJSON(path string, out any) error {
	req, err := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.AuditorToken)
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s %s", path, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Home writes an $SSHWARD_HOME as `sshward login` leaves it for user
// (Auditor or Engineer): config.json, root.pem and session.json.
func (s *Stack) Home(t testing.TB, user string) string {
	t.Helper()
	tok := s.auditorLogin
	groups := []string{"auditors"}
	if user == Engineer {
		tok, groups = s.engineerLogin, []string{"engineers"}
	}
	dir := t.TempDir()
	files := map[string]any{
		"config.json":  map[string]any{"ca": s.CA.URL, "fingerprint": s.CA.Fingerprint, "user": user},
		"session.json": map[string]any{"token": tok, "user": user, "groups": groups, "expires_at": time.Now().Add(time.Hour)},
	}
	for name, v := range files {
		b, _ := json.Marshal(v)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "root.pem"), s.CA.RootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}
