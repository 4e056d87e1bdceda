package agent

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/web/webtest"
)

var (
	sshwardBinOnce sync.Once
	sshwardBin     string
	sshwardBinErr  error
)

// buildSshward builds the sshward CLI once per test binary.
func buildSshward(t *testing.T) string {
	t.Helper()
	sshwardBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sshward-cli-")
		if err != nil {
			sshwardBinErr = err
			return
		}
		sshwardBin = filepath.Join(dir, "sshward")
		if out, err := exec.Command("go", "build", "-o", sshwardBin, "github.com/sshward/sshward/cmd/sshward").CombinedOutput(); err != nil {
			sshwardBinErr = err
			t.Logf("go build sshward: %s", out)
		}
	})
	if sshwardBinErr != nil {
		t.Fatalf("go build sshward: %v", sshwardBinErr)
	}
	return sshwardBin
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestBinaryOutputExportsExactly is the auditor's question "what exactly
// did they download?" with real parts: stock OpenSSH runs `cat random.bin`
// (and a text command) through a real agent, the recording ships to a real
// playback server, and the sshward CLI's `export ID --output-bytes` writes
// a file whose sha256 is that of what the ssh client received. A tier cap
// (bulk-output@sshward keep-mib=1 in the certificate) keeps the first MiB
// and the digest of all: export --output-bytes then refuses, naming the
// digest, rather than pass a cut file off as whole, and --blob saves the
// MiB that was kept.
func TestBinaryOutputExportsExactly(t *testing.T) {
	stack := webtest.New(t)
	a := startRealAgent(t, stack.CA, agentOpts{tier: api.TierStaging, cfg: func(c *Config) {
		c.Playback = &PlaybackConfig{URL: stack.URL, RootPEM: stack.CA.RootPEM}
		c.HostName = "localhost" // a name its host certificate holds: the playback server checks
	}})
	bin := buildSshward(t)
	home := stack.Home(t, webtest.Auditor)
	login := currentUser(t)
	c := realSSHClient(t, stack.CA, a)

	files := t.TempDir()
	if err := os.Chmod(files, 0o755); err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 3<<20)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	random[0] = 0xff // binary from the first byte: all of it goes to the blob
	randomPath := filepath.Join(files, "random.bin")
	if err := os.WriteFile(randomPath, random, 0o644); err != nil {
		t.Fatal(err)
	}

	key := func(keyID string, ext map[string]string) *userKey {
		now := time.Now()
		return mint(t, t.TempDir(), stack.CA.UserCAs[api.TierStaging], ssh.Certificate{Serial: 4343, KeyId: keyID,
			ValidPrincipals: []string{login}, ValidAfter: uint64(now.Add(-time.Minute).Unix()),
			ValidBefore: uint64(now.Add(30 * time.Minute).Unix()), Permissions: ssh.Permissions{Extensions: ext}}, nil)
	}
	// finished waits for the recording of command to be listed finished
	// and verified, and returns its id.
	finished := func(command string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var out struct {
				Sessions []playback.SessionSummary `json:"sessions"`
			}
			if err := getAuditor(stack, "/api/sessions?limit=1000", &out); err != nil {
				t.Fatal(err)
			}
			for _, s := range out.Sessions {
				if s.Command == command && !s.Live && s.Integrity == playback.IntegrityVerified {
					return s.ID
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("recording of %q not listed finished and verified; agent log:\n%s", command, tail(a.logs.String(), 3000))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	export := func(args ...string) ([]byte, string, error) {
		t.Helper()
		out, err := os.CreateTemp(t.TempDir(), "export-")
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd := exec.Command(bin, append([]string{"export"}, args...)...)
		cmd.Env = append(os.Environ(), "SSHWARD_HOME="+home)
		var errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = out, &errb
		err = cmd.Run()
		data, _ := os.ReadFile(out.Name())
		return data, errb.String(), err
	}

	t.Run("cat random.bin", func(t *testing.T) {
		k := key("case blob binary", stagingExt())
		command := "cat " + randomPath
		got, errOut, err := c.run(k, login, nil, command)
		if err != nil || got != string(random) {
			t.Fatalf("ssh %s: %v, %d bytes received (want %d), stderr %q", command, err, len(got), len(random), errOut)
		}
		id := finished(command)
		exported, stderr, err := export(id, "--output-bytes", "--playback", stack.URL)
		if err != nil {
			t.Fatalf("sshward export --output-bytes: %v: %s", err, stderr)
		}
		if sha256Hex(exported) != sha256Hex([]byte(got)) {
			t.Fatalf("exported %d bytes, sha256 %s; the client received %d, sha256 %s", len(exported), sha256Hex(exported), len(got), sha256Hex([]byte(got)))
		}
		// The cast still plays: it names the blob where the bytes were.
		cast, stderr, err := export(id, "--playback", stack.URL)
		if err != nil || !bytes.Contains(cast, []byte("[binary output: ")) || int64(len(cast)) > int64(len(random))/20 {
			t.Fatalf("plain export: %v %s, %d bytes", err, stderr, len(cast))
		}
		d := detail(t, stack, id)
		ratio := float64(d.Metadata.CastBytes+d.Metadata.Blob.Bytes) / float64(len(random))
		t.Logf("ssh cat of %d random bytes: cast %d + blob %d stored, %.4f bytes per byte", len(random), d.Metadata.CastBytes, d.Metadata.Blob.Bytes, ratio)
		if ratio > 1.1 {
			t.Errorf("%.3f stored bytes per byte, want <= 1.1", ratio)
		}
	})

	t.Run("text with bare and CR LF newlines", func(t *testing.T) {
		k := key("case blob text", stagingExt())
		command := `printf 'one\ntwo\r\nthree\r\r\n\tno newline at the end ✓'`
		got, errOut, err := c.run(k, login, nil, command)
		if err != nil || got != "one\ntwo\r\nthree\r\r\n\tno newline at the end ✓" {
			t.Fatalf("ssh: %v %q %q", err, got, errOut)
		}
		id := finished(command)
		exported, stderr, err := export(id, "--output-bytes", "--playback", stack.URL)
		if err != nil || string(exported) != got {
			t.Fatalf("export --output-bytes: %v %s: %q, want %q", err, stderr, exported, got)
		}
		blobFile := filepath.Join(t.TempDir(), "text.blob")
		if _, stderr, err := export(id, "--blob", blobFile, "--playback", stack.URL); err != nil || !strings.Contains(stderr, "has no blob") {
			t.Fatalf("export --blob of a text session: %v %q", err, stderr)
		}
	})

	t.Run("tier keeps the first MiB", func(t *testing.T) {
		ext := stagingExt()
		ext[api.ExtBulkOutput] = api.BulkOutputValue(1)
		k := key("case blob cap", ext)
		command := "cat " + randomPath + " #capped"
		got, _, err := c.run(k, login, nil, command)
		if err != nil || got != string(random) {
			t.Fatalf("the cap must not touch what the user receives: %v, %d bytes", err, len(got))
		}
		id := finished(command)
		d := detail(t, stack, id)
		b := d.Metadata.Blob
		if b == nil || !b.Cut || b.Bytes != 1<<20 || b.SHA256 != sha256Hex(random[:1<<20]) ||
			b.StreamBytes != int64(len(random)) || b.StreamSHA256 != sha256Hex(random) || d.Metadata.BulkKeepBytes != 1<<20 {
			t.Fatalf("metadata blob %+v keep %d; want the first MiB kept and the length and sha256 of all %d bytes", b, d.Metadata.BulkKeepBytes, len(random))
		}
		_, stderr, err := export(id, "--output-bytes", "--playback", stack.URL)
		if err == nil || !strings.Contains(stderr, "kept only the first 1048576 of the 3145728 bytes") || !strings.Contains(stderr, sha256Hex(random)) {
			t.Fatalf("export --output-bytes of a capped recording: %v %q", err, stderr)
		}
		blobFile := filepath.Join(t.TempDir(), "capped.blob")
		if _, stderr, err := export(id, "--blob", blobFile, "--playback", stack.URL); err != nil {
			t.Fatalf("export --blob: %v %s", err, stderr)
		}
		if kept, _ := os.ReadFile(blobFile); !bytes.Equal(kept, random[:1<<20]) {
			t.Fatalf("--blob saved %d bytes, not the first MiB", len(kept))
		}
	})
}

func detail(t *testing.T, stack *webtest.Stack, id string) playback.SessionDetail {
	t.Helper()
	var d playback.SessionDetail
	if err := getAuditor(stack, "/api/sessions/"+id, &d); err != nil {
		t.Fatal(err)
	}
	return d
}
