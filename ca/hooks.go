package ca

import (
	"context"
	"time"
)

// ApprovalPolicy is consulted on access requests (DESIGN.md "Access
// requests", "Plugins"): it may deny a request or raise the approvals it
// needs. An error, a timeout or a crash of the policy denies (fail closed).
// The plugin-backed implementation lives in plugins/ and is wired by cmd.
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
