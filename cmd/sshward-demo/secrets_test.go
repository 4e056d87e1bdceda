package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sshward/sshward/playback/store"
)

// TestSecretsStayOutOfRecordings runs the whole product (sshward-demo: CA,
// playback server, production agent as real processes) and an engineer's
// interactive `ssh -tt` through the demo's ssh_config to the production
// host, which records input. Passwords typed at `read -s`, at `stty
// -echo; read` and at Python's getpass, and a private key block and an
// AWS key printed by cat, reach no file of the demo: not the agent's data
// directory, not the playback server's casts, metadata, bbolt index or
// search index, not a log. The exported recording has a hidden-input
// marker per password and [REDACTED:…] for the secrets. Then
// `sshward-playback purge` deletes the recording so that not even its
// harmless text stays in any file, and audits the purge.
func TestSecretsStayOutOfRecordings(t *testing.T) {
	bin := binaries(t)
	dir := filepath.Join(t.TempDir(), "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	demo := exec.CommandContext(ctx, filepath.Join(bin, "sshward-demo"), "--dir", dir, "--listen", "127.0.0.1:0")
	demo.Stderr = os.Stderr
	demo.Cancel = func() error { return demo.Process.Signal(os.Interrupt) }
	demo.WaitDelay = 10 * time.Second
	stdout, _ := demo.StdoutPipe()
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stopDemo := func() {
		if !stopped {
			stopped = true
			demo.Process.Signal(os.Interrupt)
			demo.Wait()
		}
	}
	t.Cleanup(stopDemo)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.Contains(sc.Text(), "audit verify") {
	}
	go func() {
		for sc.Scan() {
		}
	}()
	var st struct {
		CA, Fingerprint string
		Users           []struct {
			Name, Password string
			TOTP           string `json:"totp_secret"`
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "demo.json"))
	if err != nil {
		t.Fatalf("the demo did not start: %v", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	eng, au := st.Users[0], st.Users[3]
	envOf := func(name string) []string {
		return append(os.Environ(), "SSHWARD_HOME="+filepath.Join(dir, "home-"+name), "SSH_AUTH_SOCK=")
	}
	run := func(env []string, stdin string, name string, args ...string) string {
		t.Helper()
		c := exec.CommandContext(ctx, name, args...)
		c.Env, c.Stdin = env, strings.NewReader(stdin)
		out, err := c.Output()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	sw := filepath.Join(bin, "sshward")
	code := strings.TrimSpace(run(nil, "", filepath.Join(bin, "sshward-demo"), "code", eng.Name, "--dir", dir))
	run(envOf(eng.Name), eng.Password+"\n", sw, "login", "--ca", st.CA, "--fingerprint", st.Fingerprint, "--user", eng.Name, "--password-stdin", "--otp", code)

	word := func(prefix string) string {
		b := make([]byte, 12)
		rand.Read(b)
		return prefix + hex.EncodeToString(b)
	}
	pw := []string{word("pw1-"), word("pw2-"), word("pw3-")}
	tag := word("session-") // found by search (the audit log keeps the search)
	inner := word("text-")  // printed, never searched: only the recording holds it
	akia := "AKIA" + strings.ToUpper(word("")[:16])
	keyLine := word("b3BlbnNzaC1rZXktdjEAAAAA") + word("") + word("")
	// A file the engineer's account can read (t.TempDir's parent is 0700).
	secretDir, err := os.MkdirTemp("", "sshward-secrets-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secretDir) })
	os.Chmod(secretDir, 0o755)
	secretFile := filepath.Join(secretDir, "creds.txt")
	content := "-----BEGIN OPENSSH PRIVATE KEY-----\n" + keyLine + "\n-----END OPENSSH PRIVATE KEY-----\naws_access_key_id = " + akia + "\n"
	if err := os.WriteFile(secretFile, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}

	// The session: a terminal that the test types into, each password
	// only once the terminal stopped echoing (as a person at the prompt).
	script := `echo ` + tag + ` ` + inner + `; ` +
		`w() { i=0; while [ $i -lt 2000 ]; do if stty -a </dev/tty | grep -qE '(^| )-echo( |;|$)'; then echo "ECHOOFF-$1"; return; fi; i=$((i+1)); sleep 0.01; done; }; ` +
		`w 1 & read -s -p 'PW1:' a; wait; echo; echo "GOT1-${#a}"; ` +
		`w 2 & stty -echo; read b; stty echo; wait; echo "GOT2-${#b}"; ` +
		`w 3 & python3 -c 'import getpass; p = getpass.getpass("PW3:"); print("GOT3-%d" % len(p))'; wait; ` +
		`cat ` + secretFile + `; echo DONE`
	ssh := exec.CommandContext(ctx, "ssh", "-F", filepath.Join(dir, "ssh_config"), "-o", "BatchMode=yes", "-tt", "db1.prod", script)
	ssh.Env = envOf(eng.Name)
	in, _ := ssh.StdinPipe()
	var mu sync.Mutex
	var seen bytes.Buffer
	ssh.Stdout = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return seen.Write(p) })
	ssh.Stderr = ssh.Stdout
	if err := ssh.Start(); err != nil {
		t.Fatal(err)
	}
	waitSeen := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			s := seen.String()
			mu.Unlock()
			if strings.Contains(s, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%q did not appear:\n%s", want, s)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i, p := range pw {
		n := strconv.Itoa(i + 1)
		waitSeen("ECHOOFF-" + n)
		io.WriteString(in, p+"\r")
		waitSeen("GOT" + n + "-" + strconv.Itoa(len(p)))
	}
	waitSeen("DONE")
	if err := ssh.Wait(); err != nil {
		t.Fatalf("ssh: %v\n%s", err, seen.String())
	}
	if !strings.Contains(seen.String(), akia) {
		t.Fatalf("the engineer does not see their own file:\n%s", seen.String())
	}

	// The auditor finds the finished session on the playback server.
	auCode, _ := totp.GenerateCode(au.TOTP, time.Now())
	auEnv := envOf(au.Name)
	run(auEnv, au.Password+"\n", sw, "login", "--ca", st.CA, "--fingerprint", st.Fingerprint, "--user", au.Name, "--password-stdin", "--otp", auCode)
	var id string
	deadline := time.Now().Add(30 * time.Second)
	for id == "" {
		var found []struct {
			ID   string `json:"id"`
			Live bool   `json:"live"`
		}
		if err := json.Unmarshal([]byte(run(auEnv, "", sw, "sessions", "--grep", tag, "--json")), &found); err != nil {
			t.Fatal(err)
		}
		if len(found) == 1 && !found[0].Live {
			id = found[0].ID
		}
		if id == "" && time.Now().After(deadline) {
			t.Fatalf("the session never reached the playback server finished: %+v", found)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cast := run(auEnv, "", sw, "export", id)
	for i, p := range pw {
		want := "hidden input: " + strconv.Itoa(len(p)+1) + " bytes typed with terminal echo off (not recorded)"
		if !strings.Contains(cast, want) {
			t.Errorf("the recording lacks the marker of password %d (%q):\n%s", i+1, want, cast)
		}
	}
	for _, want := range []string{"[REDACTED:private-key]", "aws_access_key_id = [REDACTED:aws-access-key]", tag} {
		if !strings.Contains(cast, want) {
			t.Errorf("the recording lacks %q:\n%s", want, cast)
		}
	}
	secrets := append([]string{akia, keyLine}, pw...)
	if hits := demoFilesHolding(t, dir, secrets...); len(hits) > 0 {
		t.Errorf("secrets reached files of the demo:\n%s", strings.Join(hits, "\n"))
	}

	// Purging: the server is stopped, the recording goes, and its text
	// leaves every file of the playback server, index included.
	stopDemo()
	pbDir := filepath.Join(dir, "playback")
	if hits := demoFilesHolding(t, pbDir, inner); len(hits) == 0 {
		t.Fatalf("the session's text is in no file of the playback server before the purge: the check below proves nothing")
	}
	out := run(nil, "", filepath.Join(bin, "sshward-playback"), "purge", "--dir", pbDir, "--reason", "password pasted into a shell", id)
	if !strings.Contains(out, "purged "+id) {
		t.Errorf("purge output: %q", out)
	}
	if hits := demoFilesHolding(t, pbDir, inner, id+".cast"); len(hits) > 0 {
		t.Errorf("the purged recording is still in files of the playback server:\n%s", strings.Join(hits, "\n"))
	}
	c := exec.Command(filepath.Join(bin, "sshward-playback"), "purge", "--dir", pbDir, "--reason", "again", id)
	if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "not found") {
		t.Errorf("a second purge of %s: %v %s", id, err, out)
	}
	sto, err := store.Open(ctx, store.Config{Dir: pbDir})
	if err != nil {
		t.Fatal(err)
	}
	defer sto.Close()
	evs, err := sto.Audit(ctx, store.AuditFilter{Type: "recording.purge", Subject: id})
	if err != nil || len(evs) != 1 || evs[0].Reason != "password pasted into a shell" || !strings.HasPrefix(evs[0].Actor, "admin") {
		t.Errorf("purge audit events: %+v %v", evs, err)
	}
	if rep, err := sto.VerifyAudit(ctx); err != nil {
		t.Errorf("the playback audit chain after the purge: %+v %v", rep, err)
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// demoFilesHolding returns the files under dir holding any of secrets.
func demoFilesHolding(t *testing.T, dir string, secrets ...string) []string {
	t.Helper()
	var hits []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				hits = append(hits, path+" holds "+s)
			}
		}
		return nil
	})
	return hits
}
