package main_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestScopeCLI: the scope and approval-rule flags from the command line,
// against a real sshward-ca serve: a label-scoped staging certificate is
// self-service by rule (also through ssh_config's cert --ensure), the same
// certificate unscoped needs an approval, and approvers see a request's
// scope and rule in sshward requests --json.
func TestScopeCLI(t *testing.T) {
	c := newAccessCLI(t)
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(caDir, "policy.yaml")
	b, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	const stagingApprovals = "    approvals: 0\n    record_input: false"
	if !bytes.Contains(b, []byte(stagingApprovals)) {
		t.Fatalf("policy.yaml has no staging %q:\n%s", stagingApprovals, b)
	}
	b = bytes.Replace(b, []byte(stagingApprovals), []byte("    approvals: 1\n    approvers: [incident-commanders]\n"+
		"    approval_rules: [{name: billing-self-service, labels: {app: billing}, approvals: 0}]\n    record_input: false"), 1)
	if err := os.WriteFile(pol, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("", "pw-alice-123456\n", "sshward-ca", "users", "add", "alice", "--dir", caDir, "--groups", "engineers", "--password-stdin")
	c.ok("", "pw-ivan-1234567\n", "sshward-ca", "users", "add", "ivan", "--dir", caDir, "--groups", "incident-commanders", "--password-stdin")
	url := c.serve(caDir)
	alice, ivan := filepath.Join(work, "home-alice"), filepath.Join(work, "home-ivan")
	c.ok(alice, "pw-alice-123456\n", "sshward", "login", "--ca", url, "--fingerprint", initRes.Fingerprint, "--user", "alice", "--password-stdin")
	c.ok(ivan, "pw-ivan-1234567\n", "sshward", "login", "--ca", url, "--fingerprint", initRes.Fingerprint, "--user", "ivan", "--password-stdin")

	var cert struct {
		Serial uint64 `json:"serial"`
		Scope  string `json:"scope"`
		Reused bool   `json:"reused"`
	}
	if err := json.Unmarshal([]byte(c.ok(alice, "", "sshward", "cert", "--tier", "staging", "--label", "app=billing", "--json")), &cert); err != nil {
		t.Fatal(err)
	}
	if cert.Scope != "labels app=billing" {
		t.Fatalf("cert --json scope %q", cert.Scope)
	}
	out := c.ok(alice, "", "sshward", "cert", "--tier", "staging", "--label", "app=billing", "--scope-host", "WEB1.staging")
	if !strings.Contains(out, "scoped to hosts web1.staging; labels app=billing") {
		t.Fatalf("cert output lacks the scope:\n%s", out)
	}
	// The ssh_config path: the tier needs approvals, but a rule may waive
	// them, so cert --ensure asks the CA rather than demanding a request.
	if err := json.Unmarshal([]byte(c.ok(alice, "", "sshward", "cert", "--ensure", "--tier", "staging", "--label", "app=billing", "--json")), &cert); err != nil {
		t.Fatal(err)
	}
	if cert.Scope != "labels app=billing" || cert.Reused {
		t.Fatalf("--ensure with another scope reused the certificate or lost the scope: %+v", cert)
	}
	c.refused(1, "approved by 1 of incident-commanders (the tier default)", alice, "sshward", "cert", "--tier", "staging")
	c.refused(1, "approved by 1 of incident-commanders", alice, "sshward", "cert", "--tier", "staging", "--label", "app=db")
	c.refused(2, "label", alice, "sshward", "cert", "--tier", "staging", "--label", "app")

	var req struct {
		ID           string            `json:"id"`
		Scope        string            `json:"scope"`
		Labels       map[string]string `json:"labels"`
		ApprovalRule string            `json:"approval_rule"`
	}
	if err := json.Unmarshal([]byte(c.ok(alice, "", "sshward", "request", "--tier", "staging", "--reason", "CHG-7 db migration",
		"--host", "db1.staging", "--label", "app=db", "--json")), &req); err != nil {
		t.Fatal(err)
	}
	var seen []map[string]any
	if err := json.Unmarshal([]byte(c.ok(ivan, "", "sshward", "requests", "--json")), &seen); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0]["id"] != req.ID || seen[0]["scope"] != "hosts db1.staging; labels app=db" || seen[0]["approval_rule"] != "tier default" {
		t.Fatalf("approver's requests --json: %v", seen)
	}
	table := c.ok(ivan, "", "sshward", "requests")
	if !strings.Contains(table, "hosts db1.staging; labels app=db") {
		t.Fatalf("approver's table lacks the scope:\n%s", table)
	}
	approved := c.ok(ivan, "", "sshward", "approve", req.ID)
	if !strings.Contains(approved, "hosts db1.staging; labels app=db") {
		t.Fatalf("approve output lacks the scope:\n%s", approved)
	}
}
