package web

import "errors"

// ErrPlayerMissing means `make web` has not copied asciinema-player into
// playback/web/static/vendor.
var ErrPlayerMissing = errors.New("web: asciinema-player is not in playback/web/static/vendor: run make web")
