package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/sshward/sshward/recorder"
)

// embedded holds the pages, the app script and style, and static/vendor,
// which `make web` fills with asciinema-player (git-ignored). The folder
// always exists (its README is committed), so the pattern matches on a fresh
// clone and plain `go build ./...` works before npm ever ran.
//
//go:embed static
var embedded embed.FS

// Vendor files the pages load; `make web` copies them from
// node_modules/asciinema-player/dist/bundle.
const (
	PlayerScript = "vendor/asciinema-player.min.js"
	PlayerStyle  = "vendor/asciinema-player.css"
)

// ContentSecurityPolicy is sent with every UI response. Scripts and styles
// come only from this origin (no CDN, no inline script or style attribute);
// the player compiles its inlined WebAssembly terminal, which needs
// 'wasm-unsafe-eval' (without it the player shows nothing). asciinema-player
// 3.17 sets its styles through the CSSOM, which style-src 'self' allows; the
// browser test fails on any violation the console reports. connect-src
// 'self' keeps the page talking only to the playback API it came from.
const ContentSecurityPolicy = "default-src 'none'; " +
	"script-src 'self' 'wasm-unsafe-eval'; " +
	"style-src 'self'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Config configures the UI. The zero value serves the embedded files.
type Config struct {
	// Assets replaces the embedded files; it must hold the same layout as
	// this package's static folder at its root (index.html, session.html,
	// app.js, app.css, vendor/…). Tests use it to leave the player out.
	Assets fs.FS
	// Logger gets one warning when the player files are missing (default:
	// discard).
	Logger *slog.Logger
}

// Check names the first bad field.
func (c *Config) Check() error {
	if c.Assets == nil {
		return nil
	}
	for _, name := range []string{"index.html", "session.html", "app.js", "app.css"} {
		if _, err := fs.Stat(c.Assets, name); err != nil {
			return fmt.Errorf("web: Assets has no %s: %w", name, err)
		}
	}
	return nil
}

// UI serves the playback web pages and their static files. It is an
// http.Handler meant to be mounted at "GET /" next to the API routes, which
// are more specific patterns and so take precedence:
//
//	mux.Handle("GET /", ui)
//
// It answers "/" (session list, search and login), "/session/{id}" (player
// and metadata) and "/static/…" (scripts, styles, the vendored player); every
// other path is 404. It never touches the API: the pages call /api/… from
// the browser with the session cookie.
type UI struct {
	log      *slog.Logger
	files    map[string]asset // by path below /static/, e.g. "app.js"
	pages    map[string]asset // "index", "session", "missing", "notfound"
	playerOK bool
}

// asset is one file held in memory with its validator.
type asset struct {
	body  []byte
	etag  string
	ctype string
}

// New loads the UI files once; the embedded set is small (a few hundred KB
// with the player) and immutable for the life of the process.
func New(cfg Config) (*UI, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	assets := cfg.Assets
	if assets == nil {
		sub, err := fs.Sub(embedded, "static")
		if err != nil {
			return nil, fmt.Errorf("web: open embedded files: %w", err)
		}
		assets = sub
	}
	u := &UI{log: cfg.Logger, files: map[string]asset{}, pages: map[string]asset{}}
	err := fs.WalkDir(assets, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ext := path.Ext(name)
		if ext == ".md" || strings.HasPrefix(path.Base(name), ".") {
			return nil
		}
		body, err := fs.ReadFile(assets, name)
		if err != nil {
			return err
		}
		a := newAsset(body, ext)
		if ext == ".html" {
			u.pages[strings.TrimSuffix(name, ext)] = a
			return nil
		}
		u.files[name] = a
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: load files: %w", err)
	}
	_, js := u.files[PlayerScript]
	_, css := u.files[PlayerStyle]
	u.playerOK = js && css
	if !u.playerOK {
		u.log.Warn("web: the asciinema-player files are missing; every page says to run make web",
			"want", "playback/web/static/"+PlayerScript)
	}
	return u, nil
}

func newAsset(body []byte, ext string) asset {
	sum := sha256.Sum256(body)
	ctype := mime.TypeByExtension(ext)
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	return asset{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, ctype: ctype}
}

// CheckPlayer returns ErrPlayerMissing when the vendored asciinema-player
// files are absent (a fresh clone before `make web`): the UI then answers its
// pages with a "run make web" page, and a server may want to say so at start.
func (u *UI) CheckPlayer() error {
	if !u.playerOK {
		return ErrPlayerMissing
	}
	return nil
}

// ServeHTTP serves one UI path.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		u.page(w, r, "notfound", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/":
		u.app(w, r, "index")
	case strings.HasPrefix(p, "/session/"):
		id := strings.TrimPrefix(p, "/session/")
		if recorder.CheckSessionID(id) != nil {
			u.page(w, r, "notfound", http.StatusNotFound)
			return
		}
		u.app(w, r, "session")
	case strings.HasPrefix(p, "/static/"):
		a, ok := u.files[strings.TrimPrefix(p, "/static/")]
		if !ok {
			u.page(w, r, "notfound", http.StatusNotFound)
			return
		}
		// Revalidate every time: the ETag makes that a 304, and a new
		// binary never leaves a browser running last release's script.
		h.Set("Cache-Control", "no-cache")
		serve(w, r, a)
	default:
		u.page(w, r, "notfound", http.StatusNotFound)
	}
}

// app serves a page that needs the player, or the "run make web" page.
func (u *UI) app(w http.ResponseWriter, r *http.Request, name string) {
	if !u.playerOK {
		u.page(w, r, "missing", http.StatusServiceUnavailable)
		return
	}
	u.page(w, r, name, http.StatusOK)
}

func (u *UI) page(w http.ResponseWriter, r *http.Request, name string, status int) {
	w.Header().Set("Cache-Control", "no-store")
	a, ok := u.pages[name]
	if !ok {
		// A replaced Assets without the error pages: plain text still says
		// what to do.
		a = newAsset([]byte(fallbackText[name]), ".txt")
	}
	if status != http.StatusOK {
		w.Header().Set("Content-Type", a.ctype)
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			w.Write(a.body)
		}
		return
	}
	serve(w, r, a)
}

var fallbackText = map[string]string{
	"missing":  "The web player is not built: run `make web` (or `make build`) and restart sshward-playback.\n",
	"notfound": "Not found.\n",
}

// serve answers with a and honours If-None-Match (http.ServeContent handles
// HEAD, ranges and conditional requests).
func serve(w http.ResponseWriter, r *http.Request, a asset) {
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
