// Package policy turns an identity and a tier request into a certificate
// grant: which principals, for how long, with which extensions and critical
// options. It is pure: it parses bytes, makes decisions and returns errors; it
// does no other I/O and does not log.
//
// Happy path (the CA at start, then per certificate request):
//
//	p, err := policy.Parse(data)          // refuse to start on error: it names the line
//	...
//	g, err := p.Grant(policy.Request{
//		Identity:   policy.Identity{User: "alice", Groups: []string{"sre"}, MFA: true},
//		Tier:       "production",
//		ClientAddr: "10.1.2.3",
//	})
//	// g.Principals == [alice], g.TTL == 15m,
//	// g.CriticalOptions["source-address"] == "10.1.2.3/32",
//	// g.Extensions: permit-pty, tier@sshward=production, record-input@sshward=yes, …
//
// A refusal's Error() is one sentence fit for the user ("tier production
// requires multi-factor login: …"); callers branch with errors.Is/As on the
// sentinels in errors.go, *PrincipalError and *TTLError, or ErrorCode.
//
// # Policy file
//
// YAML, one document. Every key is optional unless marked required; a key
// with an empty value means the same as leaving it out. Durations are Go
// durations ("90s", "15m", "1h30m"), at least 1m and at most 8760h.
//
//	session_ttl: 12h     # CA login session lifetime (default 12h)
//	host_cert_ttl: 24h   # host certificate lifetime (default 24h)
//	tiers:               # required, at least one; file order is kept
//	  NAME:              # 1-32 of [a-z0-9-], not starting with '-'
//	    hosts: [PATTERN, …]   # ssh_config host patterns (no spaces, commas, quotes, '#', '\')
//	    ttl: 15m              # required: certificate lifetime when none is asked for
//	    max_ttl: 30m          # most a client may ask for (default: ttl; must be ≥ ttl)
//	    mfa: false            # the login must have used a second factor
//	    approvals: 0          # approvals an access request needs (≥ 0)
//	    approvers: [GROUP]    # who may approve; required when approvals > 0
//	    request_ttl: 30m      # lifetime of a pending access request (default 30m)
//	    trusted_on: []        # other tiers whose hosts also accept this tier (break-glass: [production])
//	    record_input: false   # record keystrokes as well as output
//	    single_use: false     # a certificate may start one session only
//	    extensions: [permit-pty, …]   # of permit-X11-forwarding, permit-agent-forwarding,
//	                                  # permit-port-forwarding, permit-pty, permit-user-rc
//	    principals:           # required: group → principal templates
//	      GROUP: [deploy, "{{user}}"]
//	    source_address: ""    # "", client, "10.0.0.0/8,192.0.2.1" or a list of those
//	    force_command: ""     # OpenSSH force-command
//	    on_recording_failure: closed  # open | closed (default closed)
//	    bulk_output: {keep: all}      # binary output a recording keeps: all (default), or
//	                                  # {keep_mib: 64}: the first 64 MiB + length and sha256 of all
//	    end_session_on_expiry: false  # end sessions when the certificate expires or is revoked
//	    revocation_max_stale: 5m      # hosts refuse new sessions of this tier when their revocation
//	                                  # list is older than this (CA unreachable); off: no bound (default 5m)
//	    requires_oncall: false        # only a user on call now (Request.OnCall); see oncall.go
//	    oncall_approvals: 0           # approvals while the requester is on call (≤ approvals; default: approvals)
//	    approval_rules:               # first match decides approvals (approvalrules.go)
//	      - {name: read-only, principals: [viewer], approvals: 0}
//	      - {name: destructive, principals: [root], approvals: 2, separate_teams: [team-a, team-b]}
//
// Lists refuse duplicates. YAML anchors, aliases and merge keys work;
// explicit keys win over merged ones:
//
//	production: &prod {ttl: 15m, …}
//	break-glass: {<<: *prod, ttl: 10m, max_ttl: 10m, approvals: 2, …}
//
// Default returns the policy sshward-ca init writes (staging, production,
// break-glass for the groups engineers, sre, oncall, incident-commanders).
//
// # Principals
//
// A principal template is a unix login name or contains the placeholder
// {{user}}, replaced by Identity.User. An identity receives the union of the
// templates of every group it is in, sorted and deduplicated. A template
// whose expansion is not a valid login name (IsValidPrincipal) is dropped
// rather than issued: an OIDC user "a@b.c" gets nothing from "{{user}}" and
// is refused with ErrNoPrincipals unless another template names a login for
// them. A client may ask for a subset of its principals, never more.
//
// # Grant
//
// Checks run in this order, each with its own error: the tier exists
// (ErrUnknownTier); the identity is in one of the tier's principal groups
// (ErrNotEntitled); MFA (ErrMFARequired); approvals, which the CA vouches
// for with Request.Approved (ErrApprovalRequired); principals
// (ErrNoPrincipals, *PrincipalError); TTL within [MinTTL, max_ttl]
// (*TTLError); the client address when source_address is client
// (ErrClientAddr).
//
// The grant's extensions are the tier's permit-* (empty values) plus, from
// package api: ExtTier (tier name), ExtRecordInput ("yes"/"no"),
// ExtOnRecFail ("open"/"closed"), ExtRequestID (when a request id is given),
// ExtSingleUse and ExtEndOnExpiry (empty values, when the tier sets them),
// ExtBulkOutput ("keep-mib=N", when bulk_output caps).
// Critical options (OpenSSH PROTOCOL.certkeys): force-command when set;
// source-address as the client's address (/32 or /128) for "client", else
// the tier's CIDR list as written.
package policy
