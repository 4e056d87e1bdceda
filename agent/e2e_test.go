package agent

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// TestExecVerifiedByCertAuthority runs `ssh host echo hi` with a
// known_hosts file that holds only the @cert-authority line and
// StrictHostKeyChecking=yes: the host is verified by its CA-signed host
// certificate, with no trust on first use. The command is recorded.
func TestExecVerifiedByCertAuthority(t *testing.T) {
	ca := newFakeCA(t)
	a := startAgent(t, ca, agentOpts{realUser: true}) // the account's own login shell
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{keyID: "alice@local exec", principals: []string{login}, extensions: stagingExt()})

	out, errOut, err := c.run(k, login, nil, "echo hi; echo err >&2; exit 3")
	if out != "hi\n" {
		t.Fatalf("stdout = %q, want %q (stderr %q, err %v)", out, "hi\n", errOut, err)
	}
	if !strings.Contains(errOut, "err") {
		t.Errorf("stderr = %q, want it to hold the command's stderr", errOut)
	}
	if code := exitCode(err); code != 3 {
		t.Errorf("exit code = %d, want 3 (exit-status passed through); err %v", code, err)
	}

	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == "alice@local exec" })
	if m.Kind != recorder.KindExec || m.Principal != login || m.Identity != "alice@local" || m.Tier != api.TierStaging {
		t.Errorf("metadata = %+v", m)
	}
	if !m.Complete || m.ExitStatus == nil || *m.ExitStatus != 3 {
		t.Errorf("metadata complete=%v exit=%v, want complete with status 3", m.Complete, m.ExitStatus)
	}
	_, evs := readCast(t, castPath(SpoolDir(a.dataDir), m.SessionID))
	// No terminal: the cast shows LF as CR LF (no staircase in players);
	// the metadata says so, and ExactOutput gives back what was sent.
	if got := output(evs); !strings.Contains(got, "hi\r\n") || !strings.Contains(got, "err\r\n") || m.OutputNewlines != recorder.NewlinesCRLF {
		t.Errorf("recorded output %q (newlines %q) lacks stdout or stderr as a terminal shows them", got, m.OutputNewlines)
	}
	if got := string(recorder.ExactOutput(m, []byte(output(evs)))); !strings.Contains(got, "hi\n") || strings.Contains(got, "\r") {
		t.Errorf("exact output %q", got)
	}
	if evs[0].Code != recorder.CodeMarker || !strings.Contains(evs[0].Data, "session start") ||
		!strings.Contains(evs[0].Data, "alice@local") {
		t.Errorf("first event = %+v, want the start marker with the identity", evs[0])
	}
	last := evs[len(evs)-1]
	if last.Code != recorder.CodeMarker || !strings.Contains(last.Data, "status=3") {
		t.Errorf("last event = %+v, want the exit marker with status 3", last)
	}
}

// TestExecWithPTY: `ssh -tt host cmd` is recorded as an exec through a
// terminal, with its output.
func TestExecWithPTY(t *testing.T) {
	ca := newFakeCA(t)
	a, _ := fastAgent(t, ca, api.TierStaging)
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{keyID: "case pty exec", principals: []string{login}, extensions: stagingExt()})
	out, errOut, err := c.run(k, login, []string{"-tt"}, `printf 'pty-exec ✓ %s\n' "$(tty)"`)
	if err != nil || !strings.Contains(out, "pty-exec ✓ /dev/pts/") {
		t.Fatalf("ssh -tt: %v %q %q", err, out, errOut)
	}
	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool { return m.KeyID == "case pty exec" })
	_, evs := readCast(t, castPath(SpoolDir(a.dataDir), m.SessionID))
	if m.Kind != recorder.KindExec || !strings.Contains(output(evs), "pty-exec ✓ /dev/pts/") {
		t.Errorf("recording kind %q output %q", m.Kind, output(evs))
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}
