package api

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// Terminating a live session (issue 13 §1). An auditor asks the CA, either
// directly or through the playback server that lists the session:
//
//	POST /v1/sessions/{id}/terminate   TerminateRequest -> TerminateResponse
//
// with a CA session (a login session or a reader token: terminating is
// oversight of recordings, it mints nothing). The CA checks the caller's
// groups against the policy (policy.Policy.TerminateGroups, default
// "auditors"), audits the decision (EventSessionTerminate), optionally
// disables the user (no new certificates until `sshward-ca users enable`),
// signs a TerminateOrder with the host CA key and pushes it to the agents
// of the session's tier on their revocation stream (EventTerminate). The
// agent acts only on an order whose signature verifies with a host CA key
// it trusts now (HostTrust.HostCA: the signing key, and the previous one
// until it retires), that names its host and that has not expired: an
// order from anyone else is ignored.
const PathSessionsTerminate = "/v1/sessions/{id}/terminate"

// EventTerminate is the revocation-stream event that carries a
// TerminateOrder. It does not move the stream's Seq: orders are not kept in
// the revocation log (an agent that was away gets the recent ones again
// when it reconnects, while they are valid).
const EventTerminate = "terminate"

// EventSessionTerminate is the CA audit event of a termination (allowed or
// refused).
const EventSessionTerminate = "session.terminate"

// TerminateOrderTTL bounds how long an order may be acted on after the CA
// signed it: a recorded order cannot be replayed later.
const TerminateOrderTTL = 5 * time.Minute

// MaxTerminateReasonBytes bounds a termination reason.
const MaxTerminateReasonBytes = 500

// TerminateRequest asks the CA to end a live session.
type TerminateRequest struct {
	// Reason is shown to the session's user, marked in the recording and
	// kept in the audit log. Required.
	Reason string `json:"reason"`
	// LockUser also disables the session's user at the CA (no login, no new
	// certificate) until an administrator enables them again.
	LockUser bool `json:"lock_user,omitempty"`
	// Host, Tier, User and Serial describe the session (the playback server
	// fills them from the recording's signed metadata). Host and Tier are
	// required: the order goes to that tier's agents and names that host.
	Host   string `json:"host"`
	Tier   string `json:"tier"`
	User   string `json:"user,omitempty"`
	Serial uint64 `json:"serial,omitempty"`
}

// Check validates the shape of the request.
func (r *TerminateRequest) Check() error {
	switch {
	case strings.TrimSpace(r.Reason) == "":
		return errors.New("a reason is required: say why the session is ended (--reason TEXT)")
	case len(r.Reason) > MaxTerminateReasonBytes || !utf8.ValidString(r.Reason):
		return fmt.Errorf("the reason must be valid UTF-8 of at most %d bytes", MaxTerminateReasonBytes)
	case r.Host == "" || len(r.Host) > 253:
		return errors.New("host is required")
	case r.Tier == "" || len(r.Tier) > 64:
		return errors.New("tier is required")
	case len(r.User) > 256:
		return errors.New("user is too long")
	}
	return nil
}

// TerminateResponse says what the CA did.
type TerminateResponse struct {
	SessionID string    `json:"session_id"`
	By        string    `json:"by"`
	At        time.Time `json:"at"`
	// Locked is true when the user was disabled with it.
	Locked bool `json:"locked,omitempty"`
}

// TerminateOrder is what the CA sends the agents: signed with the host CA
// key over SignedBytes.
type TerminateOrder struct {
	SessionID string    `json:"session_id"`
	Host      string    `json:"host"`
	Tier      string    `json:"tier"`
	By        string    `json:"by"`
	Reason    string    `json:"reason"`
	IssuedAt  time.Time `json:"issued_at"`
	Expires   time.Time `json:"expires"`
	// Nonce makes two orders for the same session distinct.
	Nonce string `json:"nonce"`
	// Signature is the base64 of the SSH wire signature
	// (ssh.Signature, RFC 4253 section 6.6) over SignedBytes.
	Signature string `json:"signature"`
}

// terminateDomain separates order signatures from every other use of the
// host CA key (it signs host certificates, whose wire form starts with a
// key type string, never this).
const terminateDomain = "sshward-terminate-order-v1"

// SignedBytes is the canonical encoding the signature covers: SSH wire
// strings, so that no JSON re-encoding can change what was signed.
func (o *TerminateOrder) SignedBytes() []byte {
	return ssh.Marshal(struct {
		Domain, SessionID, Host, Tier, By, Reason string
		IssuedAt, Expires                         uint64
		Nonce                                     string
	}{terminateDomain, o.SessionID, o.Host, o.Tier, o.By, o.Reason,
		uint64(o.IssuedAt.UnixNano()), uint64(o.Expires.UnixNano()), o.Nonce})
}

// Sign signs the order with signer (the CA's host CA key).
func (o *TerminateOrder) Sign(rand io.Reader, signer ssh.Signer) error {
	sig, err := signer.Sign(rand, o.SignedBytes())
	if err != nil {
		return fmt.Errorf("api: sign terminate order: %w", err)
	}
	o.Signature = base64.StdEncoding.EncodeToString(ssh.Marshal(sig))
	return nil
}

// Errors of TerminateOrder.Verify.
var (
	ErrOrderSignature = errors.New("terminate order: signature does not verify with a trusted host CA key")
	ErrOrderExpired   = errors.New("terminate order: expired or not yet valid")
	ErrOrderHost      = errors.New("terminate order: for another host")
)

// Verify checks the order's signature with key (a host CA key the
// verifier trusts), that it names host (when host is set) and that it is
// valid at now.
func (o *TerminateOrder) Verify(key ssh.PublicKey, host string, now time.Time) error {
	return o.VerifyAny([]ssh.PublicKey{key}, host, now)
}

// VerifyAny is Verify with every host CA key the verifier trusts now (two
// during a host-CA rotation's overlap): the signature must verify with one
// of them.
func (o *TerminateOrder) VerifyAny(keys []ssh.PublicKey, host string, now time.Time) error {
	raw, err := base64.StdEncoding.DecodeString(o.Signature)
	if err != nil {
		return ErrOrderSignature
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(raw, &sig); err != nil {
		return ErrOrderSignature
	}
	signed := o.SignedBytes()
	if !slices.ContainsFunc(keys, func(k ssh.PublicKey) bool { return k != nil && k.Verify(signed, &sig) == nil }) {
		return ErrOrderSignature
	}
	// The CA backdates nothing here; allow a minute of clock skew.
	if now.Before(o.IssuedAt.Add(-time.Minute)) || !now.Before(o.Expires) || o.Expires.Sub(o.IssuedAt) > TerminateOrderTTL {
		return ErrOrderExpired
	}
	if host != "" && o.Host != host {
		return ErrOrderHost
	}
	return nil
}

// check validates an order's shape as a watcher receives it.
func (o *TerminateOrder) check() error {
	switch {
	case o == nil:
		return errors.New("terminate without an order")
	case o.SessionID == "" || o.Host == "" || o.Signature == "":
		return errors.New("terminate order without session, host or signature")
	}
	return nil
}
