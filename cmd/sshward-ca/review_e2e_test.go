package main_test

import (
	"encoding/csv"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestAccessReview: an access review of a serving CA names who could get
// each tier (groups through the policy), who did (a real certificate
// issued through sshward login + cert), and the entitlements nobody used.
// A reviewer signs lines off into the audit chain; a line that is not in
// the review, a made-up decision and a reviewer signing off their own
// access are refused.
func TestAccessReview(t *testing.T) {
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=review-passphrase-7", "SSHWARD_HOME=" + filepath.Join(work, "home"), "SSH_AUTH_SOCK="}}
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes)
	for _, u := range [][2]string{{"alice", "engineers,sre"}, {"bob", "engineers"}, {"carol", "oncall"}, {"audrey", "auditors"}} {
		r.ok("password-"+u[0]+"-1\n", "sshward-ca", "users", "add", u[0], "--groups", u[1], "--password-stdin", "--dir", caDir)
	}
	addr := freeAddr(t)
	startCA(t, r, caDir, addr)
	r.ok("password-alice-1\n", "sshward", "login", "--ca", "https://"+addr, "--fingerprint", initRes.Fingerprint, "--user", "alice", "--password-stdin")
	r.ok("", "sshward", "cert", "--tier", "staging")

	review := func() map[string]map[string]any {
		var lines []map[string]any
		if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "review", "--dir", caDir, "--json")), &lines); err != nil {
			t.Fatal(err)
		}
		m := map[string]map[string]any{}
		for _, l := range lines {
			m[l["user"].(string)+"/"+l["tier"].(string)] = l
		}
		return m
	}
	got := review()
	want := map[string]struct {
		certs  float64
		unused bool
	}{
		"alice/staging": {1, false}, "alice/production": {0, true}, "bob/staging": {0, true}, "carol/break-glass": {0, true},
	}
	for k, w := range want {
		l, ok := got[k]
		if !ok {
			t.Errorf("review lacks %s: %v", k, got)
			continue
		}
		if l["certificates"] != w.certs || l["unused"] != w.unused || l["entitled"] != true {
			t.Errorf("%s: %v, want %v certificates, unused %v, entitled", k, l, w.certs, w.unused)
		}
	}
	if len(got) != len(want) {
		t.Errorf("review has %d lines, want %d (audrey, an auditor, holds no tier): %v", len(got), len(want), got)
	}
	if s, _ := got["alice/staging"]["serials"].([]any); len(s) != 1 {
		t.Errorf("alice/staging serials %v, want the one issued", got["alice/staging"]["serials"])
	}

	table := r.ok("", "sshward-ca", "review", "--dir", caDir)
	if !strings.Contains(table, "bob") || !strings.Contains(table, "unused: candidate to remove") || !strings.Contains(table, "3 entitlements unused") {
		t.Errorf("review table:\n%s", table)
	}
	recs, err := csv.NewReader(strings.NewReader(r.ok("", "sshward-ca", "review", "--dir", caDir, "--csv", "--unused"))).ReadAll()
	if err != nil || len(recs) != 4 || recs[0][0] != "user" {
		t.Errorf("review --csv --unused: %v %q", err, recs)
	}

	out := r.ok("", "sshward-ca", "review", "signoff", "--dir", caDir, "--user", "bob", "--tier", "staging", "--decision", "remove",
		"--reviewer", "rita", "--reason", "moved to the data team")
	if !strings.Contains(out, "signed off bob/staging: remove by rita") {
		t.Errorf("signoff said %q", out)
	}
	if so, _ := review()["bob/staging"]["signoff"].(map[string]any); so["decision"] != "remove" || so["reviewer"] != "rita" || so["reason"] != "moved to the data team" {
		t.Errorf("the review does not show the sign-off: %v", so)
	}
	events := r.ok("", "sshward-ca", "audit", "list", "--dir", caDir, "--type", "review.signoff", "--json")
	if !strings.Contains(events, `"actor": "rita"`) || !strings.Contains(events, `"subject": "bob"`) || !strings.Contains(events, `"decision": "remove"`) {
		t.Errorf("sign-off not in the audit chain:\n%s", events)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--user", "audrey", "--tier", "production", "--decision", "keep", "--reviewer", "rita"}, "not a line of the review"},
		{[]string{"--user", "bob", "--tier", "staging", "--decision", "maybe", "--reviewer", "rita"}, "neither"},
		{[]string{"--user", "alice", "--tier", "staging", "--decision", "keep", "--reviewer", "alice"}, "their own access"},
		{[]string{"--user", "bob", "--tier", "staging", "--decision", "keep"}, "--reviewer"},
	} {
		res := r.run("", "sshward-ca", append([]string{"review", "signoff", "--dir", caDir}, bad.args...)...)
		if res.code == 0 || !strings.Contains(res.stderr, bad.want) {
			t.Errorf("signoff %v: exit %d %q, want a refusal with %q", bad.args, res.code, res.stderr, bad.want)
		}
	}
	if out := r.ok("", "sshward-ca", "audit", "verify", "--dir", caDir); !strings.Contains(out, "audit chain intact") {
		t.Errorf("audit verify: %q", out)
	}
}
