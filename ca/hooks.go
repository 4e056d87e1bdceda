package ca

import "github.com/sshward/sshward/plugins/contract"

// The approval-policy contract (DESIGN.md "Access requests", "Plugins"):
// a policy may deny a request or raise the approvals it needs; an error, a
// timeout or a crash of the policy denies (fail closed). The types live in
// plugins/contract, which links no CA code, so that plugins can implement
// them; the plugin-backed implementation is in plugins/, wired by cmd.
type (
	ApprovalPolicy    = contract.ApprovalPolicy
	AccessRequestInfo = contract.AccessRequestInfo
	PolicyDecision    = contract.PolicyDecision
)
