package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// cliScope reads --host/--scope-host and --label flags into a normalized
// scope (issue 12 §3).
func cliScope(hosts, labels []string) (api.Scope, error) {
	ls, err := api.ParseLabels(labels)
	if err != nil {
		return api.Scope{}, cli.Usagef("--label: %v", err)
	}
	s, err := api.Scope{Hosts: hosts, Labels: ls}.Normalize()
	if err != nil {
		return api.Scope{}, cli.Usagef("%v", err)
	}
	return s, nil
}

// certScopeText is the certificate's scope in words, "" when unscoped.
func certScopeText(c *ssh.Certificate) string {
	v, ok := c.CriticalOptions[api.CritScope]
	if !ok {
		return ""
	}
	s, err := api.ParseScope(v)
	if err != nil {
		return "unreadable scope " + v
	}
	return s.String()
}

// printApprovalRule says which approval rule a request falls under.
func printApprovalRule(w io.Writer, r *api.AccessRequest) {
	if r.ApprovalRule == "" {
		return
	}
	fmt.Fprintf(w, "  rule:    %s", r.ApprovalRule)
	if len(r.SeparateTeams) > 0 {
		fmt.Fprintf(w, " (approvers from another team than the requester's: %s)", strings.Join(r.SeparateTeams, ", "))
	}
	fmt.Fprintln(w)
}

// approvalsWaivable reports whether an approval rule of tier may let a
// certificate through without an approved request (GET /v1/trust).
func (e *env) approvalsWaivable(ctx context.Context, c *client.Client, tier string) bool {
	tr, err := c.Trust(ctx)
	if err != nil {
		return false
	}
	for _, t := range tr.Tiers {
		if t.Name == tier {
			return t.ApprovalsWaivable
		}
	}
	return false
}
