// Package contract holds the types of the plugin contract: what the CA
// hands an approval policy and a notifier, and what they answer. It imports
// nothing but the standard library, so that a plugin links none of the CA's
// code (DESIGN.md "Plugins", STYLE.md: dependencies point downward); the CA
// uses the same types under its own names (ca.AccessRequestInfo,
// store.AuditEvent are aliases of these).
package contract

import (
	"context"
	"time"
)

// ApprovalPolicy is consulted on access requests (DESIGN.md "Access
// requests", "Plugins"): it may deny a request or raise the approvals it
// needs. An error, a timeout or a crash of the policy denies (fail closed).
type ApprovalPolicy interface {
	Review(ctx context.Context, r AccessRequestInfo) (PolicyDecision, error)
}

// AccessRequestInfo is what an approval policy sees of a request.
type AccessRequestInfo struct {
	ID              string        `json:"id"`
	Phase           string        `json:"phase"` // "create", "approve" or "issue"
	Requester       string        `json:"requester"`
	RequesterGroups []string      `json:"requester_groups"`
	Tier            string        `json:"tier"`
	Reason          string        `json:"reason"`
	Principals      []string      `json:"principals,omitempty"`
	TTL             time.Duration `json:"ttl"`
	CreatedAt       time.Time     `json:"created_at"`
	Approvers       []string      `json:"approvers,omitempty"` // approvals so far
	Approver        string        `json:"approver,omitempty"`  // who is approving now (phase "approve")
}

// PolicyDecision is an approval policy's answer.
type PolicyDecision struct {
	Deny           bool   `json:"deny"`
	Reason         string `json:"reason"`
	ExtraApprovals int    `json:"extra_approvals"`
}

// Outcomes of an AuditEvent.
const (
	OutcomeOK      = "ok"
	OutcomeRefused = "refused"
)

// AuditEvent is one record of the CA's append-only, hash-chained audit log,
// as notifiers receive it. Seq, PrevHash and Hash are set by the CA when it
// appends the record (see ca/store.AuditHash).
type AuditEvent struct {
	Seq        uint64            `json:"seq"`
	Time       time.Time         `json:"time"` // set on append when zero
	Type       string            `json:"type"` // e.g. "cert.issue", "login"; required
	Actor      string            `json:"actor,omitzero"`
	Subject    string            `json:"subject,omitzero"`
	Tier       string            `json:"tier,omitzero"`
	Serial     uint64            `json:"serial,omitzero"`
	KeyID      string            `json:"key_id,omitzero"`
	RequestID  string            `json:"request_id,omitzero"`
	ClientAddr string            `json:"client_addr,omitzero"`
	Outcome    string            `json:"outcome"` // OutcomeOK or OutcomeRefused; empty means OutcomeOK
	Reason     string            `json:"reason,omitzero"`
	Details    map[string]string `json:"details,omitempty"`
	PrevHash   string            `json:"prev_hash"` // Hash of record Seq-1; "" for Seq 1
	Hash       string            `json:"hash"`      // see ca/store.AuditHash
}
