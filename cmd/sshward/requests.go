package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/cmd/internal/cli"
)

func (e *env) cmdRequest(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward request --tier T --reason TEXT [--host H …] [--principal P] [--ttl D] [--json]")
	tier := fs.String("tier", "", "tier to ask for (one that needs approvals, e.g. break-glass)")
	reason := fs.String("reason", "", "why you need access, e.g. the incident number (shown to approvers and auditors)")
	var principals cli.StringList
	fs.Var(&principals, "principal", "ask for only these logins (repeatable; default: all policy grants)")
	var hosts cli.StringList
	fs.Var(&hosts, "host", "the only hosts the certificate may be used on (repeatable or comma-separated, e.g. db1.prod; default: any host of the tier)")
	var labels cli.StringList
	fs.Var(&labels, "label", "scope to hosts with this label, key=value, e.g. app=billing (repeatable: all must match)")
	ttl := fs.Duration("ttl", 0, "certificate validity (default: the tier's ttl; at most its max_ttl)")
	asJSON := fs.Bool("json", false, "print the request as JSON")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return cli.Usagef("unexpected argument %q (quote the reason: --reason \"INC-4711 db down\")", pos[0])
	case *tier == "":
		return cli.Usagef("--tier T is required")
	case strings.TrimSpace(*reason) == "":
		return cli.Usagef("--reason TEXT is required: say why you need access")
	}
	scope, err := cliScope(hosts, labels)
	if err != nil {
		return err
	}
	if _, err := api.CheckHostnames(hosts); err != nil {
		return cli.Usagef("--host: %v", err)
	}
	c, err := e.sessionClient()
	if err != nil {
		return err
	}
	r, err := c.CreateRequest(ctx, api.CreateRequest{Tier: *tier, Reason: *reason, Principals: principals, TTL: api.Duration(*ttl), Hosts: scope.Hosts, Labels: scope.Labels})
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(e.stdout, r)
	}
	w := e.stdout
	fmt.Fprintf(w, "%s %s: %s as %s for %s, needs %d approvals (%s)\n", r.ID, r.State, r.Tier,
		strings.Join(r.Principals, ","), policy.FormatDuration(time.Duration(r.TTL)), r.ApprovalsNeeded, strings.Join(r.Approvers, ", "))
	fmt.Fprintf(w, "  reason:  %s\n", r.Reason)
	fmt.Fprintf(w, "  hosts:   %s\n", requestHosts(r))
	printApprovalRule(w, r)
	if e.printOnCallApproved(w, r) {
		return nil
	}
	fmt.Fprintf(w, "  expires: %s unless approved\n", e.requestTime(r.ExpiresAt))
	fmt.Fprintf(w, "Ask an approver to run: sshward approve %s\n", r.ID)
	fmt.Fprintf(w, "Once approved, plain ssh (or sshward cert --tier %s) uses it, once.\n", r.Tier)
	return nil
}

func (e *env) cmdRequests(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward requests [--all] [--json]")
	all := fs.Bool("all", false, "also list finished requests (denied, expired, used)")
	asJSON := fs.Bool("json", false, "print a JSON list of requests (mine first, then those I may approve)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}
	c, err := e.sessionClient()
	if err != nil {
		return err
	}
	mine, err := c.ListRequests(ctx, api.ScopeMine, *all)
	if err != nil {
		return err
	}
	others, err := c.ListRequests(ctx, api.ScopeApprovable, *all)
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(e.stdout, append(append([]api.AccessRequest{}, mine...), others...))
	}
	w := e.stdout
	if len(mine) == 0 && len(others) == 0 {
		fmt.Fprintln(w, "no open access requests (sshward request --tier T --reason TEXT opens one; --all lists finished ones)")
		return nil
	}
	if len(mine) > 0 {
		fmt.Fprintln(w, "Your requests:")
		e.requestTable(w, mine, false)
	}
	if len(others) > 0 {
		if len(mine) > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, "Requests you may decide on (sshward approve ID / sshward deny ID --reason TEXT):")
		e.requestTable(w, others, true)
	}
	return nil
}

func (e *env) requestTable(w io.Writer, rs []api.AccessRequest, withRequester bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "  ID\tSTATE\tTIER\tHOSTS\tAPPROVALS\tWHEN\tREASON\n"
	if withRequester {
		head = "  ID\tREQUESTER\tSTATE\tTIER\tHOSTS\tAPPROVALS\tWHEN\tREASON\n"
	}
	fmt.Fprint(tw, head)
	mayApprove := false
	for _, r := range rs {
		approvals := fmt.Sprintf("%d/%d", len(r.Approvals), r.ApprovalsNeeded)
		if len(r.Approvals) > 0 {
			approvals += " (" + strings.Join(r.ApproverNames(), ",") + ")"
		}
		state := r.State
		if r.CanApprove {
			state += "*"
			mayApprove = true
		}
		cols := []string{r.ID, state, r.Tier, clipRequestText(requestHosts(&r), 32), approvals, e.requestWhen(r), clipRequestText(r.Reason, 48)}
		if withRequester {
			cols = append([]string{r.ID, r.Requester}, cols[1:]...)
		}
		fmt.Fprintf(tw, "  %s\n", strings.Join(cols, "\t"))
	}
	tw.Flush()
	if mayApprove {
		fmt.Fprintln(w, "  * you may approve it now")
	}
}

// requestWhen is the one time that matters for a request's state.
func (e *env) requestWhen(r api.AccessRequest) string {
	switch r.State {
	case api.StatePending, api.StateApproved:
		return "expires " + e.requestTime(r.ExpiresAt)
	case api.StateDenied:
		if r.Denial != nil {
			return "denied by " + r.Denial.By
		}
	case api.StateIssued:
		return fmt.Sprintf("serial %d", r.IssuedSerial)
	case api.StateDone:
		return "used " + r.UsedAt.Local().Format("Jan 2 15:04")
	case api.StateExpired:
		return "expired " + r.ExpiresAt.Local().Format("Jan 2 15:04")
	}
	return ""
}

func (e *env) cmdDecide(ctx context.Context, args []string, deny bool) error {
	name := "sshward approve ID [--reason TEXT] [--json]"
	if deny {
		name = "sshward deny ID --reason TEXT [--json]"
	}
	fs := cli.NewFlagSet(name)
	reason := fs.String("reason", "", "why (required to deny; recorded in the audit log)")
	asJSON := fs.Bool("json", false, "print the request as JSON")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return cli.Usagef("one request ID is required (sshward requests lists them)")
	case deny && strings.TrimSpace(*reason) == "":
		return cli.Usagef("--reason TEXT is required to deny")
	}
	id, err := api.ParseRequestID(pos[0])
	if err != nil {
		return cli.Usagef("%v", err)
	}
	c, err := e.sessionClient()
	if err != nil {
		return err
	}
	decide := c.ApproveRequest
	if deny {
		decide = c.DenyRequest
	}
	r, err := decide(ctx, id, *reason)
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(e.stdout, r)
	}
	switch r.State {
	case api.StateDenied:
		fmt.Fprintf(e.stdout, "denied %s of %s (%s): it is closed\n", r.ID, r.Requester, r.Tier)
	case api.StateApproved:
		fmt.Fprintf(e.stdout, "approved %s (%d of %d: %s): %s may now connect once, to %s, until %s\n", r.ID, len(r.Approvals), r.ApprovalsNeeded,
			strings.Join(r.ApproverNames(), ", "), r.Requester, requestHosts(r), e.requestTime(r.ExpiresAt))
	default:
		fmt.Fprintf(e.stdout, "approved %s (%d of %d) for %s: waiting for %d more approver(s)\n", r.ID, len(r.Approvals), r.ApprovalsNeeded,
			requestHosts(r), r.ApprovalsNeeded-len(r.Approvals))
	}
	return nil
}

// approvedRequest returns the id of the caller's newest approved, unused
// access request for tier, so that the ssh_config auto-fetch uses an
// approval without being told. Failing that it returns the newest pending
// one, whose refusal tells the user how many approvals are missing, or ""
// (none, or the CA cannot say: the certificate request reports that).
func (e *env) approvedRequest(ctx context.Context, c *client.Client, tier string) string {
	rs, err := c.ListRequests(ctx, api.ScopeMine, false)
	if err != nil {
		return ""
	}
	pending := ""
	for _, r := range rs { // newest first
		switch {
		case r.Tier != tier:
		case r.State == api.StateApproved:
			return r.ID
		case r.State == api.StatePending && pending == "":
			pending = r.ID
		}
	}
	return pending
}

// sessionClient returns a CA client with the saved, unexpired session.
func (e *env) sessionClient() (*client.Client, error) {
	h, err := e.home()
	if err != nil {
		return nil, err
	}
	s, err := h.loadSession()
	if err != nil {
		return nil, err
	}
	if !e.now().Before(s.ExpiresAt) {
		return nil, errors.New("your sshward session expired: run sshward login")
	}
	c, _, err := h.client(s.Token)
	return c, err
}

// requestTime writes a time soon as clock time and distance: "14:32:05 (in 28m)".
func (e *env) requestTime(t time.Time) string {
	d := t.Sub(e.now()).Round(time.Second)
	if d < 0 {
		return fmt.Sprintf("%s (%s ago)", t.Local().Format("15:04:05"), policy.FormatDuration(-d))
	}
	return fmt.Sprintf("%s (in %s)", t.Local().Format("15:04:05"), policy.FormatDuration(d))
}

// clipRequestText fits free text into one table cell of n characters.
func clipRequestText(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// requestHosts is where a request's certificate may be used.
func requestHosts(r *api.AccessRequest) string {
	if len(r.Labels) > 0 && r.Scope != "" {
		return r.Scope
	}
	if len(r.Hosts) == 0 {
		return "any host"
	}
	return strings.Join(r.Hosts, ", ")
}
