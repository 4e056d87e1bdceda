// Package web is the playback server's browser UI: a session list with
// filters and full-text search, and a session page with asciinema-player
// beside the recording's metadata (certificate, tier, request, reason,
// approvers, integrity). The pages are static files embedded with go:embed;
// all data comes from the playback API (/api/…, see notes/playback-api.md)
// that the browser calls with the session cookie POST /api/login sets.
//
// # Happy path (the playback server)
//
//	ui, err := web.New(web.Config{Logger: log})
//	if err := ui.CheckPlayer(); err != nil {
//		log.Warn("web player missing", "err", err) // pages say "run make web"
//	}
//	mux.Handle("GET /", ui) // "/", "/session/{id}", "/static/…"; API routes are more specific
//
// # The player
//
// asciinema-player (https://docs.asciinema.org/manual/player/) comes from npm,
// pinned by package-lock.json in this folder. `make web` runs
// `npm ci --prefix playback/web` and copies its self-contained browser bundle
// (dist/bundle/asciinema-player.min.js, WebAssembly inlined, and
// asciinema-player.css) into static/vendor, which is embedded and
// git-ignored; on a fresh clone the folder holds only its README, the
// package still builds, and every page answers 503 "run make web".
//
// The session page reads the cast (asciicast v2) progressively: the player
// starts on the first 256 KiB (or on everything up to a search hit's time)
// and is re-created with the whole recording once it has arrived, keeping
// the position, so the first frame of a 100 MB recording does not wait for
// the download. A live session is read with ?follow=1 and re-rendered at
// most once a second at its newest event while "follow live" is on.
//
// # Security
//
// Every response carries ContentSecurityPolicy: scripts only from this
// origin plus 'wasm-unsafe-eval' for the player's terminal, no inline
// script, no CDN, connect-src 'self'. Recorded text and metadata reach the
// DOM only through textContent. The session cookie is HttpOnly, so the
// script never sees the credential.
package web
