package main

import (
	"fmt"
	"io"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// printOnCallApproved finishes `sshward request` for a request the CA
// approved at once because the requester is on call (a tier with
// oncall_approvals: 0): no approver is needed, and it lapses with the
// shift. It reports whether it printed.
func (e *env) printOnCallApproved(w io.Writer, r *api.AccessRequest) bool {
	if r.State != api.StateApproved || len(r.Approvals) > 0 {
		return false
	}
	fmt.Fprintf(w, "  expires: %s (with your on-call shift at the latest)\n", e.requestTime(r.ExpiresAt))
	fmt.Fprintf(w, "Approved at once: you are on call. Plain ssh (or sshward cert --tier %s --request %s) uses it, once.\n", r.Tier, r.ID)
	return true
}

// printOnCallUntil says, for a certificate granted through on-call, that it
// ends with the shift (and why it may be shorter than the tier's ttl).
func (e *env) printOnCallUntil(c *ssh.Certificate) {
	if end, ok := api.ParseOnCallUntil(c.Extensions[api.ExtOnCallUntil]); ok {
		fmt.Fprintf(e.stdout, "  granted through on-call: it ends with your shift at %s at the latest\n", end.Local().Format("Mon 15:04"))
	}
}

// printOnCallNote adds to a tier's ssh-config comment what on call changes.
func printOnCallNote(w io.Writer, t api.TierInfo) {
	if t.RequiresOnCall {
		fmt.Fprint(w, " (only while you are on call; certificates end with your shift)")
	}
	if t.OnCallApprovals != nil && *t.OnCallApprovals < t.Approvals {
		fmt.Fprintf(w, " (%d approvals while you are on call)", *t.OnCallApprovals)
	}
}
