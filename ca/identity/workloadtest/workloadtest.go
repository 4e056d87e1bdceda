// Package workloadtest runs ciissuer (a CI token issuer on loopback, see
// ciissuer/main.go for why it is not glewlwyd) as a separate process for
// tests of workload identity.
package workloadtest

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildOut  []byte
)

// Issuer is a running ciissuer.
type Issuer struct {
	URL string // the issuer URL, as in its tokens' iss
}

// Start builds ciissuer (once per test binary), runs it, and kills it when
// the test ends.
func Start(t testing.TB) *Issuer {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ciissuer")
		if buildErr == nil {
			buildOut, buildErr = exec.Command("go", "build", "-o", buildDir+"/", "github.com/sshward/sshward/ca/identity/workloadtest/ciissuer").CombinedOutput()
		}
	})
	if buildErr != nil {
		t.Fatalf("workloadtest: go build ciissuer: %v\n%s", buildErr, buildOut)
	}
	cmd := exec.Command(filepath.Join(buildDir, "ciissuer"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("workloadtest: start ciissuer: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		io.Copy(io.Discard, stdout)
	}()
	select {
	case s := <-line:
		u, ok := strings.CutPrefix(strings.TrimSpace(s), "listening ")
		if !ok {
			t.Fatalf("workloadtest: ciissuer said %q", s)
		}
		return &Issuer{URL: u}
	case <-time.After(30 * time.Second):
		t.Fatal("workloadtest: ciissuer did not start within 30s")
	}
	return nil
}

// Token fetches a signed token with these claims and options (see
// ciissuer: aud, repository, ref, environment, workflow, run_id, iss, iat,
// exp, jti, kid).
func (is *Issuer) Token(t testing.TB, q url.Values) string {
	t.Helper()
	return is.call(t, http.MethodGet, "/token?"+q.Encode())
}

// Rotate makes the issuer sign with a new key, published in its JWKS.
func (is *Issuer) Rotate(t testing.TB) {
	t.Helper()
	is.call(t, http.MethodPost, "/rotate")
}

func (is *Issuer) call(t testing.TB, method, path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, is.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("workloadtest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("workloadtest: %s %s: %s %v %s", method, path, resp.Status, err, b)
	}
	return string(b)
}

// Claims is the usual GitHub-Actions-like claim set for aud.
func Claims(aud, repository, ref, environment, runID string) url.Values {
	return url.Values{"aud": {aud}, "repository": {repository}, "ref": {ref}, "environment": {environment},
		"workflow": {"deploy"}, "run_id": {runID}, "actor": {"octocat"}}
}
