package recorder_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/ca/tlsca"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

func TestShipperConfigCheck(t *testing.T) {
	sp := recordertest.MustSpool(t, recorder.SpoolConfig{})
	cert := func() (*ssh.Certificate, ssh.Signer) { return nil, nil }
	ok := recorder.ShipperConfig{Spool: sp, URL: "https://pb:8444", RootPEM: []byte("x"), Cert: cert}
	tests := []struct {
		name string
		edit func(*recorder.ShipperConfig)
		want string
	}{
		{"no spool", func(c *recorder.ShipperConfig) { c.Spool = nil }, "Spool"},
		{"no url", func(c *recorder.ShipperConfig) { c.URL = "" }, "URL"},
		{"http", func(c *recorder.ShipperConfig) { c.URL = "http://pb" }, "https"},
		{"no identity", func(c *recorder.ShipperConfig) { c.Cert = nil }, "Cert"},
		{"no root", func(c *recorder.ShipperConfig) { c.RootPEM = nil }, "RootPEM"},
		{"huge chunks", func(c *recorder.ShipperConfig) { c.ChunkBytes = recorder.MaxChunkBytes }, "ChunkBytes"},
		{"negative", func(c *recorder.ShipperConfig) { c.MaxBackoff = -1 }, "negative"},
		{"ok", func(*recorder.ShipperConfig) {}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Check()
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check() = %v, want %q", err, tc.want)
			}
		})
	}
}

func newSigner(t testing.TB, kind string) ssh.Signer {
	t.Helper()
	var key any
	switch kind {
	case "ed25519":
		_, key, _ = ed25519.GenerateKey(rand.Reader)
	case "ecdsa":
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		key, _ = rsa.GenerateKey(rand.Reader, 2048)
	}
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSignAndVerifyRecording(t *testing.T) {
	m := recorder.Metadata{SessionID: "s1", SHA256: strings.Repeat("ab", 32), CastBytes: 1234}
	for _, kind := range []string{"ed25519", "ecdsa", "rsa"} {
		t.Run(kind, func(t *testing.T) {
			signer := newSigner(t, kind)
			sig, err := recorder.SignRecording(signer, rand.Reader, m)
			if err != nil {
				t.Fatal(err)
			}
			if err := recorder.VerifyRecording(signer.PublicKey(), m, sig); err != nil {
				t.Fatalf("verify: %v", err)
			}
			for name, bad := range map[string]recorder.Metadata{
				"session": {SessionID: "s2", SHA256: m.SHA256, CastBytes: m.CastBytes},
				"digest":  {SessionID: "s1", SHA256: strings.Repeat("cd", 32), CastBytes: m.CastBytes},
				"size":    {SessionID: "s1", SHA256: m.SHA256, CastBytes: 1235},
				// v2 covers every field: a forged identity, host, tier or
				// request breaks the signature too.
				"identity": {SessionID: "s1", SHA256: m.SHA256, CastBytes: m.CastBytes, Identity: "mallory"},
				"host":     {SessionID: "s1", SHA256: m.SHA256, CastBytes: m.CastBytes, Host: "db1.prod"},
				"tier":     {SessionID: "s1", SHA256: m.SHA256, CastBytes: m.CastBytes, Tier: "break-glass"},
				"request":  {SessionID: "s1", SHA256: m.SHA256, CastBytes: m.CastBytes, RequestID: "REQ-FORGED"},
				"approver": {SessionID: "s1", SHA256: m.SHA256, CastBytes: m.CastBytes, Approvers: []string{"bob"}},
			} {
				if err := recorder.VerifyRecording(signer.PublicKey(), bad, sig); !errors.Is(err, recorder.ErrBadSignature) {
					t.Errorf("another %s verified: %v", name, err)
				}
			}
			if err := recorder.VerifyRecording(newSigner(t, kind).PublicKey(), m, sig); !errors.Is(err, recorder.ErrBadSignature) {
				t.Errorf("another key verified: %v", err)
			}
		})
	}
	// RSA with SHA-1 is refused even when the signature is right.
	rsaSigner := newSigner(t, "rsa").(ssh.AlgorithmSigner)
	data, err := recorder.RecordingSignedData(m)
	if err != nil {
		t.Fatal(err)
	}
	sha1, err := rsaSigner.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSA)
	if err != nil {
		t.Fatal(err)
	}
	if err := recorder.VerifyRecording(rsaSigner.PublicKey(), m, base64.StdEncoding.EncodeToString(ssh.Marshal(sha1))); !errors.Is(err, recorder.ErrBadSignature) {
		t.Fatalf("ssh-rsa (SHA-1) signature accepted: %v", err)
	}
}

// FuzzVerifyRecording: whatever arrives as a signature, verifying neither
// panics nor accepts it.
func FuzzVerifyRecording(f *testing.F) {
	signer := newSigner(f, "ed25519")
	m := recorder.Metadata{SessionID: "s1", SHA256: strings.Repeat("ab", 32), CastBytes: 1}
	good, _ := recorder.SignRecording(signer, rand.Reader, m)
	f.Add(good[:len(good)-4] + "AAAA")
	f.Add("AAAAC3NzaC1lZDI1NTE5AAAAAA==")
	f.Add("not base64!")
	f.Fuzz(func(t *testing.T, sig string) {
		if sig == good {
			return
		}
		if err := recorder.VerifyRecording(signer.PublicKey(), m, sig); err == nil {
			t.Fatalf("signature %q verified", sig)
		}
	})
}

// fakeIngest is an ingest server that already holds a prefix of the cast
// (as after a crash of the agent), answers the first chunk with 409 and the
// first finish with 503.
type fakeIngest struct {
	t        testing.TB
	verifier *hostauth.Verifier
	seed     []byte // what it holds at the first start
	claim    int64  // what the first start says it holds (less than seed)

	mu       sync.Mutex // guards the fields below
	buf      []byte
	started  bool
	conflict bool
	finishes int
	finished bool
}

func (f *fakeIngest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if _, err := f.verifier.Verify(r, body); err != nil {
		http.Error(w, `{"code":"unauthenticated","message":"no"}`, http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(status int, stored int64) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(recorder.IngestStored{Stored: stored})
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/start"):
		if !f.started {
			f.started, f.buf = true, bytes.Clone(f.seed)
			reply(http.StatusOK, f.claim)
			return
		}
		reply(http.StatusOK, int64(len(f.buf)))
	case strings.HasSuffix(r.URL.Path, "/chunk"):
		off, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
		if r.Header.Get(recorder.ChunkDigestHeader) != recorder.ChunkDigest(body) {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		if off != int64(len(f.buf)) {
			f.conflict = true
			reply(http.StatusConflict, int64(len(f.buf)))
			return
		}
		f.buf = append(f.buf, body...)
		reply(http.StatusOK, int64(len(f.buf)))
	case strings.HasSuffix(r.URL.Path, "/finish"):
		if f.finishes++; f.finishes == 1 {
			http.Error(w, `{"code":"internal","message":"disk on fire"}`, http.StatusServiceUnavailable)
			return
		}
		var req recorder.IngestFinishRequest
		json.Unmarshal(body, &req)
		cert, _ := f.verifier.Verify(r, body) // nonce cache is off: verifies again
		if req.Metadata.SHA256 != recorder.ChunkDigest(f.buf) || req.Metadata.CastBytes != int64(len(f.buf)) {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		if err := recorder.VerifyRecording(cert.Key, req.Metadata, req.Signature); err != nil {
			f.t.Errorf("finish signature: %v", err)
		}
		f.finished = true
		w.WriteHeader(http.StatusOK)
	}
}

func TestShipperResumesAndRetries(t *testing.T) {
	ctx := context.Background()
	root, err := tlsca.CreateRoot(ctx, t.TempDir(), []byte("pass"), "test root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := root.ServerTLSConfig([]string{"127.0.0.1"}, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	hostCA, hostKey := newSigner(t, "ed25519"), newSigner(t, "ed25519")
	cert := &ssh.Certificate{Key: hostKey.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"web1"},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, hostCA); err != nil {
		t.Fatal(err)
	}

	sp := recordertest.MustSpool(t, recorder.SpoolConfig{Now: newFakeClock(time.Millisecond).Now})
	rec, err := sp.Create(ctx, testMetadata("s1"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		rec.Output([]byte("line " + strconv.Itoa(i) + "\r\n"))
	}
	if _, err := rec.Close(ctx, recorder.EndInfo{}); err != nil {
		t.Fatal(err)
	}
	cast, err := os.ReadFile(filepath.Join(sp.Dir(), "s1.cast"))
	if err != nil {
		t.Fatal(err)
	}
	nl := func(n int) int64 { // offset after the n-th newline
		off := 0
		for range n {
			off += bytes.IndexByte(cast[off:], '\n') + 1
		}
		return int64(off)
	}
	fake := &fakeIngest{t: t, seed: cast[:nl(20)], claim: nl(10),
		verifier: &hostauth.Verifier{HostCAs: func() []ssh.PublicKey { return []ssh.PublicKey{hostCA.PublicKey()} }, Seen: func(string, time.Time) bool { return false }}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: fake, TLSConfig: tc}
	go hs.ServeTLS(ln, "", "")
	defer hs.Close()
	srv := struct{ URL string }{"https://" + ln.Addr().String()}

	sh, err := recorder.NewShipper(recorder.ShipperConfig{
		Spool: sp, URL: srv.URL, RootPEM: tlsca.EncodePEM(root.Cert()),
		Cert:         func() (*ssh.Certificate, ssh.Signer) { return cert, hostKey },
		PollInterval: 10 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, ChunkBytes: 512,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); sh.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	// The failed finish shows, in process and in the status file.
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep, err := recorder.ReadShipStatus(sp.Dir())
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Recordings) == 1 && strings.Contains(rep.Recordings[0].LastError, "disk on fire") &&
			rep.Recordings[0].SessionID == "s1" && rep.URL == srv.URL {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status file never showed the failure: %+v, in process %+v", rep, sh.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		if _, err := os.Stat(filepath.Join(sp.Dir(), "s1.json")); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("recording never left the spool")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fake.mu.Lock()
	finished, conflict, held := fake.finished, fake.conflict, bytes.Clone(fake.buf)
	fake.mu.Unlock()
	if !finished || !conflict || !bytes.Equal(held, cast) {
		t.Fatalf("finished=%v conflict seen=%v; server holds %d bytes, cast has %d", finished, conflict, len(held), len(cast))
	}
	// The shipper drops the recording from its queue right after removing
	// it from the spool: wait for that, bounded.
	for st := sh.Status(); len(st) != 0; st = sh.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("status after shipping %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
