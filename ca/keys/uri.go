package keys

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"go.step.sm/crypto/kms/softkms"
	"go.step.sm/crypto/kms/uri"
)

// parseURI splits a key URI into a lowercase scheme and, for softkms, the
// file path. A string without a URI scheme is a plain softkms path, so
// "/srv/ca/k.key", "k.key" and "softkms:path=/srv/ca/k.key" name the same key.
func parseURI(raw string) (scheme, path string, err error) {
	if raw == "" {
		return "", "", fmt.Errorf("empty key uri")
	}
	scheme, ok := uriScheme(raw)
	if !ok {
		return softkms.Scheme, raw, nil
	}
	if scheme != softkms.Scheme {
		return scheme, "", nil
	}
	u, err := uri.ParseWithScheme(softkms.Scheme, raw)
	if err != nil {
		return "", "", fmt.Errorf("malformed softkms uri")
	}
	// Same precedence as softkms itself: path=, then a path or opaque part.
	switch {
	case u.Get("path") != "":
		path = u.Get("path")
	case u.Path != "":
		path = u.Path
	case u.Opaque != "" && !strings.Contains(u.Opaque, "="):
		path = u.Opaque
	}
	if path == "" {
		return "", "", fmt.Errorf("softkms uri has no path")
	}
	return softkms.Scheme, path, nil
}

// uriScheme reports the RFC 3986 scheme of s, lowercased, if s starts with
// one. A single letter followed by ':' is not taken for a scheme.
func uriScheme(s string) (string, bool) {
	i := strings.IndexByte(s, ':')
	if i < 2 {
		return "", false
	}
	for j := 0; j < i; j++ {
		c := s[j]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case j > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return "", false
		}
	}
	return strings.ToLower(s[:i]), true
}

// softURI is the URI of a softkms key file at an absolute path. The path is
// query-escaped (softkms URIs are parsed as a query string) but '/' stays
// readable.
func softURI(absPath string) string {
	return softkms.Scheme + ":path=" + strings.ReplaceAll(url.QueryEscape(filepath.Clean(absPath)), "%2F", "/")
}
