package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Fleet-wide single use (DESIGN.md "Trust invariants"): before a session
// with a single-use certificate starts, the host agent claims the
// certificate's serial at the CA. The claim is atomic in the CA store; a
// second claim, from any host, is refused with CodeAlreadyUsed.
//
//	POST /v1/host/single-use/{serial}/claim   SingleUseClaim (host) -> SingleUseClaimed
const PathHostSingleUse = "/v1/host/single-use/" // + serial + "/claim"

// SingleUseClaimPath is where a host claims the single-use certificate serial.
func SingleUseClaimPath(serial uint64) string {
	return PathHostSingleUse + strconv.FormatUint(serial, 10) + "/claim"
}

// CodeAlreadyUsed: the single-use certificate was claimed before (by any
// host); the session must not start.
const CodeAlreadyUsed = "already_used"

// ExtHosts lists, comma separated, the only hosts on which a certificate
// bought with an access request that named target hosts may be used. An
// agent admits it only when one of its host certificate's principals is
// in the list.
const ExtHosts = "hosts@sshward"

// MaxRequestHosts bounds the target hosts of one access request.
const MaxRequestHosts = 32

// SingleUseClaim is what a host sends when it claims a serial.
// RequestID is the certificate's request-id@sshward (empty when none);
// SessionID names the connection (a repeat of the same claim by the same
// host and session is answered as the first); ClientAddr is the SSH
// client's address, for the audit record.
type SingleUseClaim struct {
	RequestID  string `json:"request_id,omitempty"`
	SessionID  string `json:"session_id"`
	ClientAddr string `json:"client_addr,omitempty"`
}

// Check names the first bad field.
func (c *SingleUseClaim) Check() error {
	switch {
	case c.SessionID == "" || len(c.SessionID) > 256 || !utf8.ValidString(c.SessionID):
		return errors.New("session_id is required (at most 256 bytes of UTF-8)")
	case len(c.RequestID) > 64 || !utf8.ValidString(c.RequestID):
		return errors.New("request_id is not valid")
	case len(c.ClientAddr) > 256 || !utf8.ValidString(c.ClientAddr):
		return errors.New("client_addr is not valid")
	}
	return nil
}

// SingleUseClaimed answers a successful claim.
type SingleUseClaimed struct {
	Serial    uint64    `json:"serial"`
	Host      string    `json:"host"`
	ClaimedAt time.Time `json:"claimed_at"`
	RequestID string    `json:"request_id,omitempty"`
}

// CheckHostnames validates target host names: DNS names (RFC 1123 labels
// of letters, digits and '-', dot separated, at most 253 bytes). It returns
// them lowercased and deduplicated, in the order given.
func CheckHostnames(hosts []string) ([]string, error) {
	if len(hosts) > MaxRequestHosts {
		return nil, fmt.Errorf("at most %d target hosts", MaxRequestHosts)
	}
	var out []string
	for _, h := range hosts {
		n := strings.ToLower(strings.TrimSpace(h))
		if !ValidHostname(n) {
			return nil, fmt.Errorf("target host %q is not a valid host name (letters, digits, '-' and '.')", short(h))
		}
		dup := false
		for _, o := range out {
			dup = dup || o == n
		}
		if !dup {
			out = append(out, n)
		}
	}
	return out, nil
}

// ValidHostname reports whether s is a DNS host name (RFC 1123).
func ValidHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ParseExtHosts splits an ExtHosts value into lowercased names; empty
// items are dropped.
func ParseExtHosts(v string) []string {
	var out []string
	for _, h := range strings.Split(v, ",") {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			out = append(out, h)
		}
	}
	return out
}
