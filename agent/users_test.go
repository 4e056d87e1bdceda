package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
)

// TestRunAsMappedUser: a root agent runs the session as the local account
// named by the principal, with its uid, gid, supplementary groups, home and
// login shell, and serves SFTP through sftp-server as that account. An
// agent that is not root serves only its own account.
func TestRunAsMappedUser(t *testing.T) {
	ca := newFakeCA(t)
	a := startAgent(t, ca, agentOpts{realUser: true})
	c := newSSHClient(t, ca, a)
	if os.Geteuid() != 0 {
		k := ca.issue(t, c.home, certSpec{keyID: "case other user", principals: []string{"root"}, extensions: stagingExt()})
		if _, _, err := c.run(k, "root", nil, "true"); err == nil {
			t.Fatal("a non-root agent served another account")
		}
		a.logs.find(t, map[string]string{"msg": "agent: certificate refused", "reason": reasonNotSelf})
		return
	}
	name, group, home := addTestUser(t)
	u, err := LookupUser(name)
	if err != nil {
		t.Fatal(err)
	}
	k := ca.issue(t, c.home, certSpec{keyID: "case mapped user", principals: []string{name}, extensions: stagingExt()})
	out, errOut, err := c.run(k, name, nil, `id -u; id -g; id -Gn; pwd; echo "$HOME $SHELL $USER"`)
	if err != nil {
		t.Fatalf("ssh as %s: %v %q", name, err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		strconv.Itoa(int(u.UID)), strconv.Itoa(int(u.GID)), "", home, home + " /bin/sh " + name,
	}
	if len(lines) != len(want) {
		t.Fatalf("output %q", out)
	}
	for i, w := range want {
		if i == 2 {
			if !strings.Contains(" "+lines[i]+" ", " "+group+" ") {
				t.Errorf("groups %q lack the supplementary group %s", lines[i], group)
			}
			continue
		}
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i, lines[i], w)
		}
	}

	// SFTP for another account than the agent's runs sftp-server as it.
	if _, err := os.Stat(DefaultSFTPServerPath); err != nil {
		t.Fatalf("%s missing: install openssh-sftp-server", DefaultSFTPServerPath)
	}
	sftpRoundTrip(t, c, k, name, home)
	fi, err := os.Stat(filepath.Join(home, "incoming", "b.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != u.UID {
		t.Errorf("uploaded file owned by uid %d, want %d", st.Uid, u.UID)
	}
	m := waitRecording(t, SpoolDir(a.dataDir), func(m recorder.Metadata) bool {
		return m.KeyID == "case mapped user" && m.Kind == recorder.KindSubsystem
	})
	checkSFTPMarkers(t, castPath(SpoolDir(a.dataDir), m.SessionID), m)
	if m.Tier != api.TierStaging {
		t.Errorf("tier %q", m.Tier)
	}
}

// addTestUser creates a local account with a supplementary group and a
// home the account can reach, removed when the test ends.
func addTestUser(t *testing.T) (name, group, home string) {
	t.Helper()
	for _, tool := range []string{"useradd", "groupadd", "userdel", "groupdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install passwd", tool)
		}
	}
	suffix := strconv.Itoa(os.Getpid() % 100000)
	name, group = "swt"+suffix, "swg"+suffix
	base, err := os.MkdirTemp("", "sshward-home-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	home = filepath.Join(base, name)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	_ = exec.Command("userdel", name).Run() // a leftover of a killed run
	_ = exec.Command("groupdel", group).Run()
	run("groupadd", group)
	t.Cleanup(func() {
		_ = exec.Command("userdel", "-r", name).Run()
		_ = exec.Command("groupdel", group).Run()
		os.RemoveAll(base)
	})
	run("useradd", "-m", "-d", home, "-s", "/bin/sh", "-G", group, name)
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
		t.Fatal(fmt.Errorf("home %s: %v", home, err))
	}
	return name, group, home
}
