package ca_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/tlsca"
)

// TestReadyz: GET /readyz of a real CA over HTTPS says ready while it can
// issue, and 503 naming the store once its store no longer answers (the
// liveness /healthz stays 200: the process is up, it just cannot issue).
func TestReadyz(t *testing.T) {
	w := catest.New(t, catest.Options{})
	tc, err := tlsca.ClientConfigFromPEM(w.RootPEM)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get(w.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz of a working CA: %d %q", code, body)
	}
	w.Store.Close()
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready: store not answering") {
		t.Errorf("/readyz with the store closed: %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with the store closed: %d, want 200 (alive, not ready)", code)
	}
}
