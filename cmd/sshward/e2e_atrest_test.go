package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/sshward/sshward/playback/objstore/s3test"
	"github.com/sshward/sshward/recorder/atrest"
)

// typedSession runs stock ssh with a terminal on the agent at addr and
// types lines into the shell, then exit; it waits for ssh to end and
// returns what the terminal showed.
func typedSession(t *testing.T, addr string, cert certOut, lines ...string) string {
	t.Helper()
	in, seen, done := openTypedSession(t, addr, cert)
	for _, l := range lines {
		io.WriteString(in, l+"\n")
	}
	io.WriteString(in, "exit\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ssh: %v\n%s", err, seen.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("the session did not end:\n%s", seen.String())
	}
	return seen.String()
}

// openTypedSession starts stock ssh with a terminal on the agent at addr:
// what is written to in is typed into the shell; it returns what the
// terminal shows and ssh's exit. ssh is killed on cleanup.
func openTypedSession(t *testing.T, addr string, cert certOut) (io.Writer, *lockedBuffer, <-chan error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ssh := exec.Command("ssh", "-F", "none", "-i", cert.Key, "-o", "CertificateFile="+cert.Certificate, "-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
		"-tt", "-p", port, "root@"+host)
	ssh.Env = append(os.Environ(), "SSH_AUTH_SOCK=")
	seen := &lockedBuffer{}
	ssh.Stdout, ssh.Stderr = seen, seen
	in, err := ssh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ssh.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ssh.Wait() }()
	t.Cleanup(func() { ssh.Process.Kill() })
	return in, seen, done
}

// writeKey writes an age identity file (0600) holding keys.
func writeKey(t *testing.T, path string, keys ...*age.X25519Identity) {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k.String() + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// assertNowhere fails if a file under one of dirs holds one of markers
// (as is, JSON-escaped, or hex): what a thief of those directories reads.
func assertNowhere(t *testing.T, markers []string, dirs ...string) {
	t.Helper()
	var forms [][]byte
	for _, m := range markers {
		j, _ := json.Marshal(m)
		forms = append(forms, []byte(m), j[1:len(j)-1], []byte(fmt.Sprintf("%x", m)))
	}
	for _, dir := range dirs {
		n := 0
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n++
			for _, f := range forms {
				if bytes.Contains(data, f) {
					t.Errorf("%s holds %q in the clear", p, f)
				}
			}
			return nil
		})
		if err != nil || n == 0 {
			t.Fatalf("walk %s: %d files (%v)", dir, n, err)
		}
	}
}

// TestRecordingsEncryptedAtRest (issue 13, section 4): a real CA, a real
// sshward-playback serve with recordings.encryption and an S3 bucket
// (versitygw, posix backend), a real sshward-agent and stock ssh typing a
// unique command that prints a unique marker. What each step tries to
// break:
//
//   - a thief of the playback directory or of the bucket's directory, with
//     no key, finds neither the marker nor the typed command in any file
//     (casts, search index, bucket objects), in any common encoding;
//   - the auditor's export (through the server, which holds the key) shows
//     both, the recording verifies; --encrypted gives an age file the
//     recipient's key opens and nothing else reads;
//   - rotation: recipients {k1} → {k1,k2} with both identities: the old
//     recording is not rewritten and still plays, the new one opens with
//     k2 alone;
//   - a server holding only k2 refuses the old recording with a clear
//     error, not a crash, and deletes nothing.
func TestRecordingsEncryptedAtRest(t *testing.T) {
	c := newAgentCLI(t, "github.com/sshward/sshward/cmd/sshward-playback")
	s3 := s3test.Start(t)
	work := t.TempDir()
	ca := c.startRecordingCA(t, work)

	k1, _ := age.GenerateX25519Identity()
	k2, _ := age.GenerateX25519Identity()
	keyDir := filepath.Join(work, "keys")
	os.MkdirAll(keyDir, 0o700)
	k1File, k2File := filepath.Join(keyDir, "k1"), filepath.Join(keyDir, "k2")
	writeKey(t, k1File, k1)
	writeKey(t, k2File, k2)

	pbDir := filepath.Join(work, "playback")
	os.MkdirAll(pbDir, 0o700)
	s3cfg := s3RecordingsYAML(s3)
	configure := func(recipients []*age.X25519Identity, identityFiles ...string) {
		t.Helper()
		var rs []string
		for _, k := range recipients {
			rs = append(rs, k.Recipient().String())
		}
		cfg := "recordings:\n" + s3cfg + "  encryption:\n    recipients: [" + strings.Join(rs, ", ") + "]\n    identities: [file:" +
			strings.Join(identityFiles, ", file:") + "]\n"
		if err := os.WriteFile(filepath.Join(pbDir, "config.yaml"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	configure([]*age.X25519Identity{k1}, k1File)
	pbAddr := freeLoopback(t)
	pbURL := "https://" + pbAddr
	env := []string{"SSHWARD_S3_SECRET_KEY=" + s3.SecretKey}
	pb := c.startPlayback(pbDir, pbAddr, env, c.playbackJoinArgs(t, ca, work)...)
	host := c.startRecordedHost(t, ca, work, pbURL)
	auditor := host.auditor

	// record runs a session and returns its id once it is finished,
	// verified and archived (its record object is in the bucket).
	known := map[string]bool{}
	record := func(lines ...string) string {
		t.Helper()
		typedSession(t, host.agentAddr, host.cert, lines...)
		id := c.waitNewVerified(t, auditor, pbURL, known)
		waitFor(t, "the recording archived to the bucket", 60*time.Second, func() bool {
			_, err := os.Stat(filepath.Join(s3.Dir, s3.Bucket, "records", id+".json"))
			return err == nil
		})
		return id
	}

	// The marker is printed, never typed: printf builds it.
	marker := "zebra-marker-" + fmt.Sprint(time.Now().UnixNano()%1e9)
	typed := "typedcmd" + fmt.Sprint(time.Now().UnixNano()%1e7)
	half := len(marker) / 2
	a := record(fmt.Sprintf("printf '%%s%%s\\n' '%s' '%s'; : %s", marker[:half], marker[half:], typed))

	cast := c.ok(auditor, "", "sshward", "export", a, "--playback", pbURL)
	if !strings.Contains(cast, marker) || !strings.Contains(cast, typed) {
		t.Fatalf("the auditor's export lacks the marker or the typed command:\n%s", cast)
	}
	assertNowhere(t, []string{marker, typed}, pbDir, filepath.Join(s3.Dir, s3.Bucket))
	// Search finds it (the index decrypts in memory). After the walk: the
	// audit chain keeps the auditor's query (the marker) as it was typed.
	if out := c.ok(auditor, "", "sshward", "sessions", "--grep", typed, "--json", "--playback", pbURL); !strings.Contains(out, a) {
		t.Fatalf("search for the typed command: %s", out)
	}

	// An encrypted export: age to the recipients; k1 opens it.
	enc := c.ok(auditor, "", "sshward", "export", a, "--encrypted", "--playback", pbURL)
	if !strings.HasPrefix(enc, "age-encryption.org/v1\n") || strings.Contains(enc, marker) {
		t.Fatalf("the encrypted export is not an age file, or holds the marker: %.80q", enc)
	}
	r, err := age.Decrypt(strings.NewReader(enc), k1)
	if err != nil {
		t.Fatal(err)
	}
	if plain, _ := io.ReadAll(r); string(plain) != cast {
		t.Fatal("the encrypted export does not decrypt to the plain export")
	}

	// Rotation: {k1} → {k1, k2}, both identities.
	aFile := filepath.Join(pbDir, "blobs", a+".cast")
	aBefore, err := os.ReadFile(aFile)
	if err != nil {
		t.Fatal(err)
	}
	pb.stop()
	configure([]*age.X25519Identity{k1, k2}, k1File, k2File)
	pb = c.startPlayback(pbDir, pbAddr, env)
	b := record("echo recording-B-$((40+2))")
	if out := c.ok(auditor, "", "sshward", "export", b, "--playback", pbURL); !strings.Contains(out, "recording-B-42") {
		t.Fatalf("B after the rotation: %s", out)
	}
	if out := c.ok(auditor, "", "sshward", "export", a, "--playback", pbURL); out != cast {
		t.Fatal("A after the rotation is not what it was")
	}
	if aAfter, _ := os.ReadFile(aFile); !bytes.Equal(aBefore, aAfter) {
		t.Fatal("A was rewritten by the rotation")
	}
	// B opens with k2 alone (read straight from the stolen file).
	bf, err := os.Open(filepath.Join(pbDir, "blobs", b+".cast"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := atrest.NewFile(bf, []age.Identity{k2})
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := io.ReadAll(x); err != nil || !strings.Contains(string(plain), "recording-B-42") {
		t.Fatalf("B with k2 alone: %v", err)
	}
	x.Close()

	// A server holding only k2: A is refused clearly, nothing is deleted.
	pb.stop()
	configure([]*age.X25519Identity{k2}, k2File)
	c.startPlayback(pbDir, pbAddr, env)
	res := c.run(auditor, "", "sshward", "export", a, "--playback", pbURL)
	if res.code == 0 || !strings.Contains(res.stderr, "identity this server does not hold") {
		t.Fatalf("export of A without k1: code %d, %s", res.code, res.stderr)
	}
	if out := c.ok(auditor, "", "sshward", "export", b, "--playback", pbURL); !strings.Contains(out, "recording-B-42") {
		t.Fatal("B with k2 alone on the server")
	}
	if aAfter, err := os.ReadFile(aFile); err != nil || !bytes.Equal(aBefore, aAfter) {
		t.Fatalf("A changed or went away after a failed view: %v", err)
	}
}
