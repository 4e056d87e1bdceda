package main_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/sshward/sshward/ca/store"
)

// issuer drives POST /v1/cert over real HTTPS like an external load
// generator: keep-alive connections, a fresh key per request.
type issuer struct {
	url, token string
	hc         *http.Client
}

func newIssuer(t *testing.T, r *runner, dir, addr string) *issuer {
	t.Helper()
	root, err := os.ReadFile(filepath.Join(dir, "tls", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root)
	is := &issuer{url: "https://" + addr, hc: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 64}}}
	resp, err := is.hc.Post(is.url+"/v1/login", "application/json", strings.NewReader(`{"user":"bench","password":"bench-Secret-pw1"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lr struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&lr); err != nil || lr.Token == "" {
		t.Fatalf("login: %d %v", resp.StatusCode, err)
	}
	is.token = lr.Token
	return is
}

// issue asks for one certificate; it returns the serial of an answered
// certificate (status 200 with a certificate that parses), or the status
// and body of anything else.
func (is *issuer) issue() (serial uint64, status int, body string, err error) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	return is.issueFor(sp)
}

func (is *issuer) issueFor(sp ssh.PublicKey) (serial uint64, status int, body string, err error) {
	reqBody, _ := json.Marshal(map[string]any{"tier": "staging", "public_key": strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))), "principals": []string{"bench"}})
	req, _ := http.NewRequest(http.MethodPost, is.url+"/v1/cert", bytes.NewReader(reqBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+is.token)
	resp, err := is.hc.Do(req)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, resp.StatusCode, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, resp.StatusCode, string(b), nil
	}
	var cr struct {
		Certificate string `json:"certificate"`
		Serial      uint64 `json:"serial"`
	}
	if err := json.Unmarshal(b, &cr); err != nil {
		return 0, resp.StatusCode, string(b), err
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(cr.Certificate))
	if err != nil {
		return 0, resp.StatusCode, string(b), fmt.Errorf("answered certificate does not parse: %w", err)
	}
	if c, ok := k.(*ssh.Certificate); !ok || c.Serial != cr.Serial || !bytes.Equal(c.Key.Marshal(), sp.Marshal()) {
		return 0, resp.StatusCode, string(b), fmt.Errorf("answered certificate is not for the key sent or not serial %d", cr.Serial)
	}
	return cr.Serial, resp.StatusCode, string(b), nil
}

// benchCA makes a CA directory with the user "bench" (no TOTP).
func benchCA(t *testing.T) (*runner, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=crash-passphrase-123"}}
	r.ok("", "sshward-ca", "init", "--dir", dir)
	r.ok("bench-Secret-pw1\n", "sshward-ca", "users", "add", "bench", "--dir", dir, "--groups", "engineers", "--password-stdin")
	return r, dir
}

// storedIssuances opens the store file (the CA is stopped) and returns the
// user-certificate serials it holds and the serials of successful
// cert.issue audit records, after checking the audit chain.
func storedIssuances(t *testing.T, dir string) (certs, audited map[uint64]bool) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Options{Path: filepath.Join(dir, "ca.db"), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain after the crash: %v", err)
	}
	certs, audited = map[uint64]bool{}, map[uint64]bool{}
	err = db.View(ctx, func(tx *store.Tx) error {
		list, err := tx.ListCerts(store.CertFilter{Kind: store.CertKindUser})
		for _, c := range list {
			certs[c.Serial] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := db.Audit(ctx, store.AuditFilter{Type: "cert.issue"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Outcome == store.OutcomeOK {
			audited[ev.Serial] = true
		}
	}
	return certs, audited
}

// TestAnsweredCertificatesSurviveKill9: 16 clients issue certificates
// from a real sshward-ca over HTTPS while it group-commits; the CA is
// killed with SIGKILL the moment the 300th answer arrives, with requests
// still in flight. Every certificate any client received must be in the
// store with its audit record after the crash (the answer is sent only
// after the batch's commit reached the disk), the audit chain must verify,
// and the restarted CA must go on issuing fresh serials.
func TestAnsweredCertificatesSurviveKill9(t *testing.T) {
	r, dir := benchCA(t)
	addr := freeAddr(t)
	cmd := startCA(t, r, dir, addr)
	is := newIssuer(t, r, dir, addr)

	const workers, killAt = 16, 300
	var (
		mu       sync.Mutex
		answered = map[uint64]bool{}
		killOnce sync.Once
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for range 200 { // bounded: the kill ends it far sooner
				serial, status, body, err := is.issue()
				if err != nil || status != http.StatusOK {
					if status != 0 && status != http.StatusOK && strings.Contains(body, "certificate\"") {
						t.Errorf("a refused request carried a certificate: %d %s", status, body)
					}
					return // the CA is gone
				}
				mu.Lock()
				answered[serial] = true
				n := len(answered)
				mu.Unlock()
				if n >= killAt {
					killOnce.Do(func() { _ = cmd.Process.Kill() })
				}
			}
		})
	}
	wg.Wait()
	killOnce.Do(func() { _ = cmd.Process.Kill() })
	_ = cmd.Wait()
	if len(answered) < killAt {
		t.Fatalf("only %d certificates answered before the CA stopped", len(answered))
	}

	certs, audited := storedIssuances(t, dir)
	var lost []uint64
	var maxSerial uint64
	for s := range answered {
		if !certs[s] || !audited[s] {
			lost = append(lost, s)
		}
		maxSerial = max(maxSerial, s)
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d answered certificates are missing from the store or audit after kill -9: %v", len(lost), len(answered), lost[:min(5, len(lost))])
	}
	t.Logf("%d answered, %d stored (the rest were committed but not yet answered when the CA died)", len(answered), len(certs))

	// The CA comes back from the crash and hands out fresh serials.
	startCA(t, r, dir, addr)
	is = newIssuer(t, r, dir, addr)
	serial, status, body, err := is.issue()
	if err != nil || status != http.StatusOK {
		t.Fatalf("issue after restart: %d %s %v", status, body, err)
	}
	if serial <= maxSerial {
		t.Fatalf("serial %d after restart is not above %d handed out before the crash", serial, maxSerial)
	}
}

// TestFailedCommitAnswersNoCertificate: the store file may not grow (a
// real RLIMIT_FSIZE on the running sshward-ca, so its writes fail with
// EFBIG as on a full disk) while 16 clients issue concurrently. Every
// request of a batch whose commit failed must get an error and no
// certificate; afterwards the store holds exactly the certificates that
// were answered, each with its audit record, and nothing for the refused.
func TestFailedCommitAnswersNoCertificate(t *testing.T) {
	r, dir := benchCA(t)
	// How far the file is used now: the limit leaves room for a few
	// dozen issuances past it.
	bdb, err := bolt.Open(filepath.Join(dir, "ca.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var used int64
	if err := bdb.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	bdb.Close()

	addr := freeAddr(t)
	cmd := startCA(t, r, dir, addr)
	is := newIssuer(t, r, dir, addr)
	lim := uint64(used + 256<<10)
	if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: lim, Max: lim}, nil); err != nil {
		t.Fatalf("prlimit: %v", err)
	}

	var (
		mu       sync.Mutex
		answered = map[uint64]bool{}
		refused  int
		wg       sync.WaitGroup
	)
	for range 16 {
		wg.Go(func() {
			for range 100 {
				serial, status, body, err := is.issue()
				if err != nil {
					t.Errorf("issue: %v", err)
					return
				}
				mu.Lock()
				if status == http.StatusOK {
					answered[serial] = true
				} else {
					refused++
					if status != http.StatusInternalServerError || strings.Contains(body, "certificate\"") || strings.Contains(body, "ssh-ed25519-cert") {
						t.Errorf("failed commit answered %d %s, want a 500 without a certificate", status, body)
					}
				}
				stop := refused >= 64
				mu.Unlock()
				if stop {
					return
				}
			}
		})
	}
	wg.Wait()
	if refused == 0 || len(answered) == 0 {
		t.Fatalf("answered %d, refused %d: the limit did not make commits fail part way", len(answered), refused)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	certs, audited := storedIssuances(t, dir)
	for s := range answered {
		if !certs[s] || !audited[s] {
			t.Errorf("answered certificate %d is not in the store with its audit record", s)
		}
	}
	for s := range certs {
		if !answered[s] {
			t.Errorf("certificate %d is in the store but its request got an error", s)
		}
	}
	for s := range audited {
		if !answered[s] {
			t.Errorf("audit says certificate %d was issued but its request got an error", s)
		}
	}
	t.Logf("answered %d, refused %d (commits failed with EFBIG)", len(answered), refused)
}
