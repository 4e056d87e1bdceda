// Package s3test runs a real S3-compatible server for tests: versitygw
// (Apache-2.0, posix backend) on loopback over HTTPS with a certificate of
// its own, one bucket, one access key. make test installs versitygw
// (.ci/deps: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0).
package s3test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Version is the versitygw release the tests are verified with.
const Version = "v1.8.0"

// Server is a running versitygw.
type Server struct {
	Endpoint             string // https://127.0.0.1:PORT
	Bucket               string
	AccessKey, SecretKey string
	Dir                  string // the posix backend's root: DIR/BUCKET/KEY
	// HTTPClient trusts the server's certificate.
	HTTPClient *http.Client

	t        testing.TB
	bin      string
	addr     string
	certFile string
	keyFile  string
	cmd      *exec.Cmd
	done     chan struct{}
}

// Binary finds versitygw on PATH or in GOPATH/bin.
func Binary() (string, bool) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, true
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
			p := filepath.Join(dir, "bin", "versitygw")
			if _, err := os.Stat(p); err == nil {
				return p, true
			}
		}
	}
	return "", false
}

// Start runs versitygw with a fresh bucket; it stops when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, ok := Binary()
	if !ok {
		t.Fatalf("versitygw not installed: go install github.com/versity/versitygw/cmd/versitygw@%s (make test does this)", Version)
	}
	dir := t.TempDir()
	s := &Server{t: t, bin: bin, Dir: filepath.Join(dir, "root"), Bucket: "recordings",
		AccessKey: "sshward-test-" + randHex(t, 4), SecretKey: randHex(t, 20)}
	if err := os.MkdirAll(filepath.Join(s.Dir, s.Bucket), 0o700); err != nil {
		t.Fatal(err)
	}
	s.certFile, s.keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeCert(t, s.certFile, s.keyFile)
	s.HTTPClient = &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ln.Close()
	s.Endpoint = "https://" + s.addr
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "--port", s.addr, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--cert", s.certFile, "--key", s.keyFile, "--quiet", "posix", s.Dir)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var logs strings.Builder
	s.cmd.Stdout, s.cmd.Stderr = &logs, &logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("s3test: start versitygw: %v", err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := s.HTTPClient.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("s3test: versitygw exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("s3test: versitygw not answering on %s: %v\n%s", s.addr, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CertFile is the PEM file of the server's TLS certificate, for a client
// given a CA file (recordings.s3.ca_file).
func (s *Server) CertFile() string { return s.certFile }

// Stop ends the server (SIGTERM, then SIGKILL); the data stays in Dir.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Kill ends the server with SIGKILL (the data stays in Dir).
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts a stopped server again on the same address and data.
func (s *Server) Restart() {
	s.t.Helper()
	s.start()
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// writeCert makes a self-signed certificate for 127.0.0.1 and returns a
// pool that trusts it.
func writeCert(t testing.TB, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "s3test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
