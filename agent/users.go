package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// User is the local account a session runs as.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups (may include GID)
	Home   string
	Shell  string // login shell; /bin/sh when the account names none
}

// LookupUser finds a local account with os/user (which honours NSS when
// built with cgo) and its login shell in /etc/passwd or getent(1).
func LookupUser(name string) (*User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("%w: %q", errNoSuchUser, name)
		}
		return nil, fmt.Errorf("agent: look up user %q: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("agent: look up user %q: non-numeric uid or gid", name)
	}
	out := &User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("agent: groups of user %q: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("agent: groups of user %q: bad gid %q", name, g)
		}
		out.Groups = append(out.Groups, uint32(n))
	}
	out.Shell = loginShell(name)
	return out, nil
}

// loginShell is the account's shell from /etc/passwd, then getent(1) for
// accounts that live elsewhere (LDAP, sssd); /bin/sh when neither names one.
func loginShell(name string) string {
	if f, err := os.Open("/etc/passwd"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if e, ok := parsePasswdLine(sc.Text()); ok && e.name == name {
				return orDefaultShell(e.shell)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getent", "passwd", name).Output()
	if err == nil {
		if e, ok := parsePasswdLine(strings.TrimSpace(string(out))); ok && e.name == name {
			return orDefaultShell(e.shell)
		}
	}
	return "/bin/sh"
}

func orDefaultShell(s string) string {
	if s == "" {
		return "/bin/sh"
	}
	return s
}

type passwdEntry struct {
	name, home, shell string
}

// parsePasswdLine reads one passwd(5) line: name:pw:uid:gid:gecos:home:shell.
func parsePasswdLine(line string) (passwdEntry, bool) {
	if line == "" || line[0] == '#' {
		return passwdEntry{}, false
	}
	f := strings.Split(line, ":")
	if len(f) != 7 || f[0] == "" {
		return passwdEntry{}, false
	}
	return passwdEntry{name: f[0], home: f[5], shell: f[6]}, true
}

// credential is how a process runs as u: nil when the agent already is u
// (it is not root), else uid, gid and supplementary groups. A nil Groups
// would clear the supplementary groups, so it is never nil.
func (u *User) credential() *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	groups := u.Groups
	if groups == nil {
		groups = []uint32{}
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: groups}
}
