package web_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/sshward/sshward/playback/web"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestUIRoutes(t *testing.T) {
	ui := mustUI(t)
	tests := []struct {
		name, method, path string
		status             int
		ctype, contains    string
	}{
		{"list page", "GET", "/", 200, "text/html", `data-page="index"`},
		{"session page", "GET", "/session/s-1.abc_D", 200, "text/html", `src="/static/vendor/asciinema-player.min.js"`},
		{"head of a page", "HEAD", "/", 200, "text/html", ""},
		{"app script", "GET", "/static/app.js", 200, "text/javascript", "streamCast"},
		{"app style", "GET", "/static/app.css", 200, "text/css", ".meta"},
		{"player script", "GET", "/static/vendor/asciinema-player.min.js", 200, "text/javascript", "AsciinemaPlayer"},
		{"player style", "GET", "/static/vendor/asciinema-player.css", 200, "text/css", ".ap-"},
		{"vendor readme is not served", "GET", "/static/vendor/README.md", 404, "text/html", "Not found"},
		{"html is not a static file", "GET", "/static/index.html", 404, "text/html", "Not found"},
		{"traversal in session id", "GET", "/session/..", 404, "text/html", "Not found"},
		{"hidden session id", "GET", "/session/.x", 404, "text/html", "Not found"},
		{"nested session path", "GET", "/session/a/b", 404, "text/html", "Not found"},
		{"empty session id", "GET", "/session/", 404, "text/html", "Not found"},
		{"unknown page", "GET", "/admin", 404, "text/html", "Not found"},
		{"post", "POST", "/", 405, "text/html", "Not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, ui, tt.method, tt.path, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tt.ctype)
			}
			if !strings.Contains(body, tt.contains) {
				t.Errorf("body lacks %q", tt.contains)
			}
			if tt.method == "HEAD" && body != "" {
				t.Errorf("HEAD answered a body of %d bytes", len(body))
			}
			if got := resp.Header.Get("Content-Security-Policy"); got != web.ContentSecurityPolicy {
				t.Errorf("CSP %q", got)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("security headers missing: %v", resp.Header)
			}
		})
	}
}

func TestCSPAllowsThePlayerAndNothingInline(t *testing.T) {
	csp := web.ContentSecurityPolicy
	for _, want := range []string{"default-src 'none'", "script-src 'self' 'wasm-unsafe-eval';", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP lacks %q: %s", want, csp)
		}
	}
	for _, bad := range []string{"'unsafe-inline'", "'unsafe-eval'", "http:", "https:", "*"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP allows %s: %s", bad, csp)
		}
	}
}

// TestPagesHaveNoInlineScript keeps the pages within the CSP: every script
// is a file from this origin, no handler attributes, no CDN.
func TestPagesHaveNoInlineScript(t *testing.T) {
	ui := mustUI(t)
	for _, path := range []string{"/", "/session/x1"} {
		_, body := get(t, ui, "GET", path, nil)
		for _, bad := range []string{"<script>", "onclick=", "onload=", "onsubmit=", "javascript:", "style=", "//cdn", "http://", "https://"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s contains %q", path, bad)
			}
		}
	}
}

func TestStaticRevalidation(t *testing.T) {
	ui := mustUI(t)
	resp, _ := get(t, ui, "GET", "/static/app.js", nil)
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("ETag %q, Cache-Control %q", etag, resp.Header.Get("Cache-Control"))
	}
	resp, body := get(t, ui, "GET", "/static/app.js", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified || body != "" {
		t.Fatalf("revalidation: status %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, _ = get(t, ui, "GET", "/", nil)
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("page Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
}

// TestMissingPlayer is a fresh clone before `make web`: the package builds,
// and every page says how to fix it instead of showing a broken player.
func TestMissingPlayer(t *testing.T) {
	files := fstest.MapFS{
		"index.html":       {Data: []byte("<p>index</p>")},
		"session.html":     {Data: []byte("<p>session</p>")},
		"missing.html":     {Data: []byte("<p>run make web</p>")},
		"app.js":           {Data: []byte("//")},
		"app.css":          {Data: []byte("/**/")},
		"vendor/README.md": {Data: []byte("make web fills this")},
	}
	ui, err := web.New(web.Config{Assets: files})
	if err != nil {
		t.Fatal(err)
	}
	if err := ui.CheckPlayer(); !errors.Is(err, web.ErrPlayerMissing) {
		t.Fatalf("CheckPlayer = %v, want ErrPlayerMissing", err)
	}
	for _, path := range []string{"/", "/session/abc"} {
		resp, body := get(t, ui, "GET", path, nil)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "make web") {
			t.Errorf("%s: %d %q, want 503 saying make web", path, resp.StatusCode, body)
		}
	}
	// Without its error pages, a replaced asset set still answers in words.
	resp, body := get(t, ui, "GET", "/nope", nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "Not found") {
		t.Errorf("404 fallback: %d %q", resp.StatusCode, body)
	}

	// The embedded set on a fresh clone has the same shape: the committed
	// README keeps static/vendor in the embed pattern.
	delete(files, "session.html")
	if _, err := web.New(web.Config{Assets: files}); err == nil || !strings.Contains(err.Error(), "session.html") {
		t.Errorf("New without session.html: %v", err)
	}
}
