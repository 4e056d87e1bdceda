package hostauth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

const (
	// Scheme is the Authorization auth-scheme.
	Scheme = "SSHWard-Host"
	// context separates these signatures from any other use of a host key
	// (SSH handshakes, recording signatures).
	signingContext = "sshward-host-auth-v1"

	// maxHeaderLen bounds parsing; an RSA-4096 host certificate is ~2 KiB
	// of base64.
	maxHeaderLen   = 16 << 10
	minNonceLen    = 16
	maxNonceLen    = 64
	maxTimestampLn = 19 // digits in math.MaxInt64
)

// header is a parsed Authorization value.
type header struct {
	cert  []byte // certificate wire format
	ts    int64  // unix seconds
	nonce string // [A-Za-z0-9_-]{16,64}
	sig   []byte // ssh.Signature wire format
}

func (h header) String() string {
	return fmt.Sprintf("%s cert=%s, ts=%d, nonce=%s, sig=%s", Scheme,
		base64.StdEncoding.EncodeToString(h.cert), h.ts, h.nonce,
		base64.StdEncoding.EncodeToString(h.sig))
}

// parseHeader parses an Authorization value. It is strict: the scheme
// (case-insensitive, per RFC 7235), then exactly the four parameters, each
// once, in any order; ts in canonical decimal so the signed string and the
// number cannot disagree. errNotScheme means another scheme.
func parseHeader(v string) (header, error) {
	var h header
	if len(v) > maxHeaderLen {
		return h, errors.New("header too long")
	}
	scheme, params, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, Scheme) {
		return h, errNotScheme
	}
	seen := map[string]bool{}
	for _, p := range strings.Split(params, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || val == "" {
			return h, fmt.Errorf("parameter %q is not key=value", truncate(p))
		}
		if seen[k] {
			return h, fmt.Errorf("parameter %q repeated", truncate(k))
		}
		seen[k] = true
		var err error
		switch k {
		case "cert":
			h.cert, err = base64.StdEncoding.Strict().DecodeString(val)
		case "sig":
			h.sig, err = base64.StdEncoding.Strict().DecodeString(val)
		case "ts":
			h.ts, err = parseTimestamp(val)
		case "nonce":
			err = checkNonce(val)
			h.nonce = val
		default:
			return h, fmt.Errorf("unknown parameter %q", truncate(k))
		}
		if err != nil {
			return h, fmt.Errorf("parameter %s: %w", k, err)
		}
	}
	for _, k := range []string{"cert", "ts", "nonce", "sig"} {
		if !seen[k] {
			return h, fmt.Errorf("parameter %s missing", k)
		}
	}
	return h, nil
}

var errNotScheme = errors.New("not the " + Scheme + " scheme")

func parseTimestamp(s string) (int64, error) {
	if len(s) > maxTimestampLn {
		return 0, errors.New("too long")
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ts < 0 || strconv.FormatInt(ts, 10) != s {
		return 0, errors.New("not canonical unix seconds")
	}
	return ts, nil
}

func checkNonce(s string) error {
	if len(s) < minNonceLen || len(s) > maxNonceLen {
		return fmt.Errorf("length %d not in [%d, %d]", len(s), minNonceLen, maxNonceLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return errors.New("not base64url")
		}
	}
	return nil
}

// signedData is the canonical string the host signs.
func signedData(method, requestURI string, ts int64, nonce string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return []byte(signingContext + "\n" + method + "\n" + requestURI + "\n" +
		strconv.FormatInt(ts, 10) + "\n" + nonce + "\n" + hex.EncodeToString(sum[:]))
}

// truncate keeps attacker-sized input out of error messages.
func truncate(s string) string {
	const n = 32
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
