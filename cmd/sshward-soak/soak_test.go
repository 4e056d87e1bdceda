package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSoakShort runs the soak for 2 minutes with the real binaries built
// from this tree: the CA, playback, three agents, stock ssh sessions and
// break-glass approvals, with every fault kind injected at least once
// (the fault gap is short so that all five fit). It asserts nothing was
// lost, corrupted or duplicated, and that the counts add up: every session
// started is acknowledged or refused, every acknowledged one got exactly
// one verdict, every acknowledged certificate and approval is stored, and
// both audit logs verify. Without root the disk-full (tmpfs) and
// network-cut (namespace) faults cannot run: they are dropped and said so,
// and the rest still runs.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a 2-minute soak: not in -short")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("ssh not found: apt-get install openssh-client")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/sshward/sshward/cmd/sshward", "github.com/sshward/sshward/cmd/sshward-ca",
		"github.com/sshward/sshward/cmd/sshward-agent", "github.com/sshward/sshward/cmd/sshward-playback")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"--duration", "2m", "--fault-gap", "4s", "--sessions", "2", "--agents", "3", "--status-every", "20s",
		"--bin", bin, "--dir", t.TempDir(), "--json"}, &stdout, &stderr)
	t.Logf("soak progress:\n%s\nsummary:\n%s", stderr.String(), stdout.String())
	if err != nil {
		t.Fatalf("soak: %v\nsummary: %s", err, stdout.String())
	}
	var sum summary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, stdout.String())
	}
	r, s := sum.Recordings, sum.Sessions
	if r.Lost != 0 || r.Corrupted != 0 || r.Duplicate != 0 {
		t.Errorf("lost %d, corrupted %d, duplicate %d: %v", r.Lost, r.Corrupted, r.Duplicate, r.Detail)
	}
	if s.Acknowledged < 10 || s.BreakGlass == 0 {
		t.Errorf("%d acknowledged sessions, %d break-glass: too little load to prove anything", s.Acknowledged, s.BreakGlass)
	}
	if s.Started != s.Acknowledged+s.Refused || s.Acknowledged != s.Finished+s.Cut {
		t.Errorf("sessions do not add up: %+v", s)
	}
	if s.Acknowledged != r.Complete+r.CompleteCut+r.Lost+r.Corrupted+r.Duplicate {
		t.Errorf("%d acknowledged sessions but %d+%d+%d+%d+%d verdicts", s.Acknowledged, r.Complete, r.CompleteCut, r.Lost, r.Corrupted, r.Duplicate)
	}
	if r.Total < s.Acknowledged {
		t.Errorf("%d recordings on the server for %d acknowledged sessions", r.Total, s.Acknowledged)
	}
	if i := sum.Issuances; i.Acknowledged == 0 || i.Stored != i.Acknowledged || len(i.Missing) != 0 {
		t.Errorf("issuances: %+v", i)
	}
	if a := sum.Approvals; a.Acknowledged == 0 || a.Stored != a.Acknowledged || len(a.Missing) != 0 {
		t.Errorf("approvals: %+v", a)
	}
	if !sum.Audit.CA.OK || !sum.Audit.Playback.OK || sum.Audit.CA.Records == 0 || sum.Audit.Playback.Records == 0 {
		t.Errorf("audit: %+v", sum.Audit)
	}
	root := os.Geteuid() == 0
	for _, k := range allFaults {
		dropped := (k == faultDiskFull || k == faultNetCut) && !root
		switch {
		case dropped && !strings.Contains(strings.Join(sum.Notes, "\n"), k+" dropped"):
			t.Errorf("fault %s neither injected nor said to be dropped: %v", k, sum.Notes)
		case dropped:
			t.Logf("not root: %s dropped", k)
		case sum.Faults[k] == 0:
			t.Errorf("fault %s was never injected: %v", k, sum.Faults)
		}
	}
	if len(sum.FaultErrors) > 0 {
		t.Errorf("recoveries failed: %v", sum.FaultErrors)
	}
}
