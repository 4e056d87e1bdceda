package main_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMetrics: `sshward-ca serve --metrics-listen` serves Prometheus text
// on its own listener: issuance counted by tier and outcome (from the
// audit log), a refused login, HTTP requests by route pattern (never the
// raw path), pending access requests, store commits, Go runtime. The API
// listener does not serve /metrics.
func TestMetrics(t *testing.T) {
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=metrics-passphrase-9", "SSHWARD_HOME=" + filepath.Join(work, "home"), "SSH_AUTH_SOCK="}}
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes)
	r.ok("password-alice-1\n", "sshward-ca", "users", "add", "alice", "--groups", "engineers", "--password-stdin", "--dir", caDir)
	addr, maddr := freeAddr(t), freeAddr(t)
	startCA(t, r, caDir, addr, "--metrics-listen", maddr)

	if res := r.run("wrong-password-1\n", "sshward", "login", "--ca", "https://"+addr, "--fingerprint", initRes.Fingerprint, "--user", "alice", "--password-stdin"); res.code == 0 {
		t.Fatal("a wrong password logged in")
	}
	r.ok("password-alice-1\n", "sshward", "login", "--ca", "https://"+addr, "--fingerprint", initRes.Fingerprint, "--user", "alice", "--password-stdin")
	r.ok("", "sshward", "cert", "--tier", "staging")

	scrape := func() string {
		t.Helper()
		resp, err := http.Get("http://" + maddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	text := scrape()
	for _, want := range []string{
		`sshward_ca_audit_events_total{outcome="ok",tier="staging",type="cert.issue"} 1`,
		`sshward_ca_audit_events_total{outcome="refused",tier="",type="login"} 1`,
		`sshward_ca_http_requests_total{code="200",route="POST /v1/cert"} 1`,
		`sshward_ca_http_request_duration_seconds_count{route="POST /v1/cert"} 1`,
		"sshward_ca_requests_pending 0",
		"sshward_ca_store_commits_total ",
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "route=") && strings.Contains(line, "alice") {
			t.Errorf("a route label holds a raw path: %s", line)
		}
	}
	// A second issuance: the counter moves on, the first scrape's count is not lost.
	time.Sleep(10 * time.Millisecond)
	r.ok("", "sshward", "cert", "--tier", "staging", "--ttl", "30m")
	if text := scrape(); !strings.Contains(text, `sshward_ca_audit_events_total{outcome="ok",tier="staging",type="cert.issue"} 2`) {
		t.Errorf("after a second issuance:\n%s", grepLines(text, "cert.issue"))
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // only the status matters
	if resp, err := hc.Get("https://" + addr + "/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("the API listener's /metrics: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
