package api

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Access requests (DESIGN.md "Access requests"): a requester asks for a tier
// that needs approvals, N distinct approvers decide, and the approved request
// buys exactly one certificate.
//
//	POST /v1/requests                     CreateRequest (Bearer) -> AccessRequest
//	GET  /v1/requests?scope=mine|approvable[&all=true]  (Bearer) -> RequestList (scope defaults to mine)
//	GET  /v1/requests/{id}                              (Bearer) -> AccessRequest
//	POST /v1/requests/{id}/approve        Decision      (Bearer) -> AccessRequest
//	POST /v1/requests/{id}/deny           Decision      (Bearer) -> AccessRequest
//	POST /v1/host/requests/{id}/used      RequestUsed   (host)   -> AccessRequest
const (
	PathRequests     = "/v1/requests"
	PathHostRequests = "/v1/host/requests/" // + id + "/used"
)

// RequestPath is the path of one request; action is "", "approve" or "deny".
func RequestPath(id, action string) string {
	p := PathRequests + "/" + url.PathEscape(id)
	if action != "" {
		p += "/" + action
	}
	return p
}

// RequestUsedPath is where a host reports the first use of a single-use
// certificate bought with request id.
func RequestUsedPath(id string) string { return PathHostRequests + url.PathEscape(id) + "/used" }

// Scopes of GET /v1/requests.
const (
	ScopeMine       = "mine"       // requests I made
	ScopeApprovable = "approvable" // others' requests in tiers whose approver groups I am in
)

// Request states. pending → approved | denied | expired; approved → issued |
// denied | expired; issued → done (the host reported the session).
const (
	StatePending  = "pending"
	StateApproved = "approved"
	StateDenied   = "denied"
	StateExpired  = "expired"
	StateIssued   = "issued"
	StateDone     = "done"
)

// Certificate extensions set on certificates bought with an access request,
// so that the host agent can put them in the recording metadata without
// asking the CA.
const (
	ExtReason    = "reason@sshward"    // the request's reason, at most MaxExtReasonBytes
	ExtApprovers = "approvers@sshward" // comma-separated user names of the approvers
)

// Error codes of the access-request API.
const (
	// CodeRequestClosed: the request is no longer in a state that allows
	// the action (decided, expired, already used).
	CodeRequestClosed = "request_closed"
	// CodePolicyDenied: the approval policy denied the request or was
	// unavailable (fail closed).
	CodePolicyDenied = "policy_denied"
)

// Limits of access-request fields.
const (
	MaxReasonBytes    = 1024 // reason of a request or a decision
	MaxExtReasonBytes = 256  // reason as copied into ExtReason
	requestIDPrefix   = "REQ-"
	maxRequestIDLen   = 32
)

// RequestIDAlphabet is the alphabet of the random part of a request id:
// Crockford's base32, which leaves out I, L, O and U so that an id read
// aloud on an incident bridge is typed back correctly.
const RequestIDAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// ParseRequestID normalises a request id typed by a person (any case,
// surrounding spaces) and checks its form: "REQ-" and 4 to 28 characters of
// RequestIDAlphabet.
func ParseRequestID(s string) (string, error) {
	id := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(id, requestIDPrefix) || len(id) < len(requestIDPrefix)+4 || len(id) > maxRequestIDLen {
		return "", fmt.Errorf("request id %q is not of the form REQ-XXXXXXXX", short(s))
	}
	for _, c := range id[len(requestIDPrefix):] {
		if !strings.ContainsRune(RequestIDAlphabet, c) {
			return "", fmt.Errorf("request id %q is not of the form REQ-XXXXXXXX", short(s))
		}
	}
	return id, nil
}

// CreateRequest asks for access to a tier that needs approvals. Principals
// and TTL, when set, narrow what the certificate will carry (policy
// decides the most); Reason says why, for the approvers and the auditors.
type CreateRequest struct {
	Tier       string   `json:"tier"`
	Reason     string   `json:"reason"`
	Principals []string `json:"principals,omitempty"`
	TTL        Duration `json:"ttl,omitempty"`
	// Hosts, when set, are the only hosts the certificate may be used on
	// (ExtHosts); see CheckHostnames.
	Hosts []string `json:"hosts,omitempty"`
	// Labels, when set, limit the certificate to hosts with every one of
	// these labels (scope.go).
	Labels map[string]string `json:"labels,omitempty"`
}

// Check validates the shape of the request (not policy).
func (r *CreateRequest) Check() error {
	switch {
	case r.Tier == "":
		return errors.New("tier is required")
	case len(r.Tier) > 256:
		return errors.New("tier is too long")
	case strings.TrimSpace(r.Reason) == "":
		return errors.New("reason is required: say why you need access (e.g. the incident number)")
	case len(r.Principals) > 64:
		return errors.New("too many principals")
	case r.TTL < 0:
		return errors.New("ttl must not be negative")
	}
	if err := checkReason(r.Reason); err != nil {
		return err
	}
	if _, err := CheckHostnames(r.Hosts); err != nil {
		return err
	}
	if err := CheckLabels(r.Labels); err != nil {
		return err
	}
	for _, p := range r.Principals {
		if p == "" || len(p) > 256 {
			return fmt.Errorf("principal %q is not valid", short(p))
		}
	}
	return nil
}

// Decision is the body of approve and deny: why. A deny needs a reason.
type Decision struct {
	Reason string `json:"reason,omitempty"`
}

// Check validates the decision; deny says whether it is a denial.
func (d *Decision) Check(deny bool) error {
	if deny && strings.TrimSpace(d.Reason) == "" {
		return errors.New("a denial needs a reason (--reason TEXT)")
	}
	return checkReason(d.Reason)
}

// RequestUsed is what a host reports when a session starts with a
// certificate bought with an access request. Serial names the certificate,
// which must be the one the request was issued for.
type RequestUsed struct {
	Serial    uint64 `json:"serial"`
	SessionID string `json:"session_id,omitempty"`
}

// Check names the first bad field.
func (r *RequestUsed) Check() error {
	switch {
	case r.Serial == 0:
		return errors.New("serial is required")
	case len(r.SessionID) > 256 || !utf8.ValidString(r.SessionID):
		return errors.New("session_id is not valid")
	}
	return nil
}

// AccessRequest is a request as the API shows it.
type AccessRequest struct {
	ID         string   `json:"id"`
	State      string   `json:"state"`
	Requester  string   `json:"requester"`
	Tier       string   `json:"tier"`
	Reason     string   `json:"reason"`
	Principals []string `json:"principals"`
	// Hosts are the target hosts the certificate is limited to (none: any
	// host of the tier).
	Hosts []string `json:"hosts,omitempty"`
	// Labels, Scope and ApprovalRule (scope.go): the host labels the
	// certificate is limited to, the whole scope in words ("any host" when
	// unscoped) and the policy's approval rule that set ApprovalsNeeded.
	Labels       map[string]string `json:"labels,omitempty"`
	Scope        string            `json:"scope,omitempty"`
	ApprovalRule string            `json:"approval_rule,omitempty"`
	// SeparateTeams, when set, are the team groups of which an approver
	// must be in one the requester is not in.
	SeparateTeams   []string  `json:"separate_teams,omitempty"`
	TTL             Duration  `json:"ttl"`
	CreatedAt       time.Time `json:"created_at"`
	ExpiresAt       time.Time `json:"expires_at"` // pending: until approved; approved: until used
	ApprovalsNeeded int       `json:"approvals_needed"`
	Approvals       []Vote    `json:"approvals"`
	Denial          *Vote     `json:"denial,omitempty"`
	// Approvers are the groups whose members may approve.
	Approvers    []string  `json:"approver_groups,omitempty"`
	IssuedSerial uint64    `json:"issued_serial,omitempty"`
	IssuedAt     time.Time `json:"issued_at,omitzero"`
	UsedAt       time.Time `json:"used_at,omitzero"`
	UsedOn       string    `json:"used_on,omitempty"` // host that claimed the certificate
	// CanApprove is true when the caller may approve it now.
	CanApprove bool `json:"can_approve,omitempty"`
}

// Vote is one approval or the denial: who, when, why.
type Vote struct {
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// RequestList answers GET /v1/requests, newest first.
type RequestList struct {
	Requests []AccessRequest `json:"requests"`
}

// ApproverNames returns the names of the approvers, in approval order.
func (r *AccessRequest) ApproverNames() []string {
	out := make([]string, 0, len(r.Approvals))
	for _, v := range r.Approvals {
		out = append(out, v.By)
	}
	return out
}

// ExtReasonValue cuts a reason to MaxExtReasonBytes at a character
// boundary, for ExtReason.
func ExtReasonValue(reason string) string {
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	if len(reason) <= MaxExtReasonBytes {
		return reason
	}
	cut := MaxExtReasonBytes
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
}

func checkReason(s string) error {
	switch {
	case len(s) > MaxReasonBytes:
		return fmt.Errorf("reason is longer than %d bytes", MaxReasonBytes)
	case !utf8.ValidString(s):
		return errors.New("reason is not valid UTF-8")
	}
	for _, c := range s {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return errors.New("reason must be one line of text without control characters")
		}
	}
	return nil
}

// short bounds user input quoted back in an error message.
func short(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
