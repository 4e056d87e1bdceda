// Package oncall is the approval-policy plugin sshward ships, an example
// of the gates teams write (DESIGN.md "Access requests": approval-policy
// plugins may add gates such as a ticket format or an on-call schedule).
//
// The rule, for each request on a tier the schedule covers:
//
//  1. The reason must match ticket_pattern (when set), or the request is
//     denied with a reason that names the pattern.
//  2. A requester on call when the request was made (AccessRequestInfo.
//     CreatedAt) needs only the approvals the tier asks for.
//  3. Anyone else needs extra_approvals more (default 1): someone who is
//     not carrying the pager is less likely to be fixing an incident.
//
// The answer depends only on the request, so it is the same at each phase
// the CA asks (create, approve, issue). Requests on other tiers pass
// untouched.
//
// The schedule file (YAML; times in RFC 3339):
//
//	tiers: [break-glass]          # tiers reviewed; empty or absent: all
//	ticket_pattern: '^INC-\d+'    # Go RE2, unanchored unless you anchor it
//	extra_approvals: 1            # for requesters not on call, 0…10
//	rotation:                     # repeats forever from start
//	  start: 2026-01-05T09:00:00Z
//	  period: 168h                # one slot per period: weekly handover
//	  slots:
//	    - [alice, bob]            # week 0, 2, 4, …
//	    - [carol]                 # week 1, 3, 5, …
//	shifts:                       # one-off cover, on call in addition
//	  - {start: 2026-12-24T00:00:00Z, end: 2026-12-27T00:00:00Z, users: [dave]}
//
// Someone is on call at t if a shift with start ≤ t < end lists them, or
// the rotation slot covering t does (none before rotation.start). The
// plugin re-reads the file when it changes; a file that no longer parses
// makes every review fail, which the CA treats as a denial (fail closed).
//
//	sshward-plugin-oncall --schedule /etc/sshward/oncall.yaml
package oncall
