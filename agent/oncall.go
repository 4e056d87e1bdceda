package agent

import (
	"errors"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// On-call shifts (issue 12 §2): a certificate granted because its holder
// was on call carries api.ExtOnCallUntil and ends with the shift, by expiry
// or by the CA's revocation, whichever reaches the host first. Either way
// the user reads why (api.OnCallEndedMessage), not a bare "revoked".

// maxNoticeBytes bounds a notice from the CA shown on the user's terminal.
const maxNoticeBytes = 300

// endNotice is a session end cause with its own message for the user; it
// unwraps to the sentinel (ErrCertRevoked, ErrCertExpired) that decides the
// reason, the exit status and the recording (endCauses).
type endNotice struct {
	cause  error
	notice string
}

func (e *endNotice) Error() string { return e.cause.Error() + ": " + e.notice }
func (e *endNotice) Unwrap() error { return e.cause }

// noticeOf returns the message an endNotice carries, or "".
func noticeOf(cause error) string {
	var n *endNotice
	if errors.As(cause, &n) {
		return n.notice
	}
	return ""
}

// cleanNotice makes text from the CA safe for a terminal: one line, no
// control characters, valid UTF-8, bounded.
func cleanNotice(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }), " ")
	s = strings.TrimSpace(s)
	if len(s) > maxNoticeBytes {
		n := maxNoticeBytes
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}

// expiredCause is the cause a session ends with when cert expires.
func expiredCause(cert *ssh.Certificate) error {
	if end, ok := api.ParseOnCallUntil(cert.Extensions[api.ExtOnCallUntil]); ok {
		return &endNotice{cause: ErrCertExpired, notice: api.OnCallEndedMessage(end)}
	}
	return ErrCertExpired
}

// revokedCause is the cause a session of cert ends with when r revokes it:
// with the CA's notice for the serial when there is one.
func revokedCause(r *revocations, cert *ssh.Certificate) error {
	if r != nil {
		if n := cleanNotice(r.list.Notices[cert.Serial]); n != "" {
			return &endNotice{cause: ErrCertRevoked, notice: n}
		}
	}
	// No notice: a revocation for another reason (a lost laptop during the
	// shift) must not read as the shift's end.
	return ErrCertRevoked
}

// withNotice returns notices plus the one ev carries (a copy when it
// adds one: list versions share maps only while neither changes them).
func withNotice(notices map[uint64]string, ev api.RevocationEvent) map[uint64]string {
	if ev.Notice == "" || ev.Serial == 0 {
		return notices
	}
	return mergeNotices(notices, map[uint64]string{ev.Serial: ev.Notice})
}

// mergeNotices returns the union of a and b (b wins), sharing a when b
// adds nothing.
func mergeNotices(a, b map[uint64]string) map[uint64]string {
	if len(b) == 0 {
		return a
	}
	out := make(map[uint64]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
