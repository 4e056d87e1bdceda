package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// onCallTiers are appended to the default policy: oncall-prod only for
// whoever is on call, prod-ro auto-approved for them.
const onCallTiers = `
  oncall-prod:
    hosts: ["*.oncall.example.com"]
    trusted_on: [production]
    ttl: 4h
    max_ttl: 12h
    requires_oncall: true
    principals: {sre: ["{{user}}"]}
    end_session_on_expiry: true
  prod-ro:
    hosts: ["*.ro.example.com"]
    trusted_on: [production]
    ttl: 1h
    approvals: 1
    approvers: [incident-commanders]
    oncall_approvals: 0
    principals: {sre: [readonly]}
    end_session_on_expiry: true
`

// TestServeOnCall drives the real binaries: serve refuses a policy that
// needs a schedule without one, and a broken schedule, naming the fix;
// with a schedule, the engineer on call gets a certificate capped at the
// shift's end and an auto-approved read-only request, the one off call
// is refused with the reason, and a schedule edit picked up on SIGHUP
// (size and mtime unchanged, so only the signal can reveal it) ends the
// shift: the CA revokes and audits it. The schedule is written from the
// wall clock the processes run on, so any date works.
func TestServeOnCall(t *testing.T) {
	work := t.TempDir()
	caDir := filepath.Join(work, "ca")
	home := filepath.Join(work, "home")
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSHWARD_HOME=" + home, "SSH_AUTH_SOCK="}}
	var initRes struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "init", "--dir", caDir, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	pol, err := os.ReadFile(filepath.Join(caDir, "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(caDir, "policy.yaml"), append(pol, onCallTiers...), 0o600); err != nil {
		t.Fatal(err)
	}

	// No schedule named: refused, saying what to add.
	res := r.run("", "sshward-ca", "serve", "--dir", caDir, "--listen", freeAddr(t))
	if res.code != 1 || !strings.Contains(res.stderr, "tier oncall-prod uses the on-call schedule") || !strings.Contains(res.stderr, "oncall_schedule: oncall.yaml") {
		t.Fatalf("serve without a schedule: %+v", res)
	}
	cfg, err := os.ReadFile(filepath.Join(caDir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(caDir, "config.yaml"), append(cfg, "\noncall_schedule: oncall.yaml\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	schedPath := filepath.Join(caDir, "oncall.yaml")
	start := time.Now().UTC().Truncate(time.Minute).Add(-time.Hour)
	end := start.Add(2 * time.Hour)
	schedule := func(member string) string {
		return fmt.Sprintf("time_zone: UTC\nrotations:\n  sre-primary:\n    members: [%s, carol]\n    start: %s\n    shift: 2h\n", member, start.Format("2006-01-02T15:04"))
	}
	// A broken schedule: refused, naming the entry.
	if err := os.WriteFile(schedPath, []byte("rotations:\n  sre-primary:\n    members: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = r.run("", "sshward-ca", "serve", "--dir", caDir, "--listen", freeAddr(t))
	if res.code != 1 || !strings.Contains(res.stderr, "rotations.sre-primary: members is empty") {
		t.Fatalf("serve with a broken schedule: %+v", res)
	}

	if err := os.WriteFile(schedPath, []byte(schedule("alice")), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	url := "https://" + addr
	ca := startCA(t, r, caDir, addr)
	r.ok("alicepassword1\n", "sshward-ca", "users", "add", "alice", "--dir", caDir, "--groups", "sre", "--password-stdin")
	r.ok("bobpassword12\n", "sshward-ca", "users", "add", "bobby", "--dir", caDir, "--groups", "sre", "--password-stdin")

	// What the CA enforces, as an operator sees it.
	var rows []struct {
		Rotation, User string
		ShiftEnd       time.Time `json:"shift_end"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "oncall", "--dir", caDir, "--json")), &rows); err != nil ||
		len(rows) != 1 || rows[0].User != "alice" || rows[0].Rotation != "sre-primary" || !rows[0].ShiftEnd.Equal(end) {
		t.Fatalf("sshward-ca oncall --json = %+v, %v", rows, err)
	}
	if out := r.ok("", "sshward-ca", "oncall", "--dir", caDir, "--at", end.Format(time.RFC3339)); !strings.Contains(out, "sre-primary") || !strings.Contains(out, "carol") {
		t.Fatalf("sshward-ca oncall --at the handover:\n%s", out)
	}

	// alice is on call: capped at the end of her shift.
	aliceHome := &runner{t: t, env: []string{"SSHWARD_HOME=" + filepath.Join(work, "alice"), "SSH_AUTH_SOCK="}}
	aliceHome.ok("alicepassword1\n", "sshward", "login", "--ca", url, "--fingerprint", initRes.Fingerprint, "--user", "alice", "--password-stdin")
	var cert struct {
		Serial      uint64    `json:"serial"`
		ValidBefore time.Time `json:"valid_before"`
	}
	if err := json.Unmarshal([]byte(aliceHome.ok("", "sshward", "cert", "--tier", "oncall-prod", "--json")), &cert); err != nil {
		t.Fatal(err)
	}
	if !cert.ValidBefore.Equal(end) {
		t.Fatalf("certificate valid before %s, want the shift end %s", cert.ValidBefore, end)
	}
	if out := aliceHome.ok("", "sshward", "cert", "--tier", "oncall-prod"); !strings.Contains(out, "granted through on-call: it ends with your shift at") {
		t.Fatalf("sshward cert does not say the certificate ends with the shift:\n%s", out)
	}
	out := aliceHome.ok("", "sshward", "request", "--tier", "prod-ro", "--reason", "check the queue")
	if !strings.Contains(out, " approved: prod-ro") || !strings.Contains(out, "Approved at once: you are on call") {
		t.Fatalf("on-call read-only request:\n%s", out)
	}

	// ssh-config says what on call changes.
	sshCfg := aliceHome.ok("", "sshward", "ssh-config")
	for _, want := range []string{"# tier oncall-prod (only while you are on call; certificates end with your shift)",
		"# tier prod-ro (needs 1 approvals: sshward request --tier prod-ro) (0 approvals while you are on call)"} {
		if !strings.Contains(sshCfg, want) {
			t.Errorf("ssh-config lacks %q:\n%s", want, sshCfg)
		}
	}

	// bobby is not on call: refused with the reason.
	bobHome := &runner{t: t, env: []string{"SSHWARD_HOME=" + filepath.Join(work, "bobby"), "SSH_AUTH_SOCK="}}
	bobHome.ok("bobpassword12\n", "sshward", "login", "--ca", url, "--fingerprint", initRes.Fingerprint, "--user", "bobby", "--password-stdin")
	res = bobHome.run("", "sshward", "cert", "--tier", "oncall-prod")
	if res.code != 1 || !strings.Contains(res.stderr, "tier oncall-prod is only for whoever is on call, and bobby is not on call now") {
		t.Fatalf("off-call certificate: %+v", res)
	}
	out = bobHome.ok("", "sshward", "request", "--tier", "prod-ro", "--reason", "check the queue")
	if !strings.Contains(out, " pending: prod-ro") || !strings.Contains(out, "needs 1 approvals") {
		t.Fatalf("off-call read-only request:\n%s", out)
	}

	// The rotation is handed to bobby mid-shift. Same size, same mtime:
	// only SIGHUP makes the CA read it.
	st, err := os.Stat(schedPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(schedPath, []byte(schedule("bobby")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(schedPath, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := ca.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	type event struct {
		Type    string
		Subject string
		Details map[string]string
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var events []event
		if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", caDir, "--json")), &events); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range events {
			found = found || e.Type == "oncall.shift_end" && e.Subject == "alice" &&
				slices.Contains(strings.Split(e.Details["serials"], ","), fmt.Sprint(cert.Serial)) && e.Details["shift_end"] == end.Format(time.RFC3339)
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no oncall.shift_end event for alice's certificate %d after SIGHUP: %+v", cert.Serial, events)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The CA still serves, and bobby is on call now.
	bobHome.ok("", "sshward", "cert", "--tier", "oncall-prod", "--json")
}
