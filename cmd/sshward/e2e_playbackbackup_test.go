package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sshward/sshward/playback/store"
)

// playbackProc is a running sshward-playback serve.
type playbackProc struct {
	cmd  *exec.Cmd
	log  *lockedBuffer
	stop func() // interrupts it and waits for it to exit (also on cleanup)
}

// startPlayback runs sshward-playback serve on dir and addr with args
// (the join flags at the first start) until the test ends or it is
// stopped; its log is shown when the test fails.
func (c *accessCLI) startPlayback(dir, addr string, env []string, args ...string) *playbackProc {
	c.t.Helper()
	p := &playbackProc{log: &lockedBuffer{}}
	p.cmd = exec.Command(filepath.Join(c.bin, "sshward-playback"), append([]string{"serve", "--dir", dir, "--listen", addr}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	cmd, log := p.cmd, p.log
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		})
	}
	c.t.Cleanup(func() {
		p.stop()
		if c.t.Failed() {
			c.t.Logf("playback %s (%s) log:\n%s", addr, dir, log.String())
		}
	})
	waitServing(c.t, stdout, p.log)
	return p
}

// numberedSession runs stock ssh as root on the agent at addr with cert,
// printing n lines "prefix 00001"… about 30 ms apart; it answers what the
// terminal shows and a channel with ssh's exit. ssh is killed on cleanup.
func numberedSession(t *testing.T, addr string, cert certOut, prefix string, n int) (*lockedBuffer, <-chan error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	script := fmt.Sprintf(`for i in $(seq 1 %d); do printf '%s %%05d\n' $i; sleep 0.03; done`, n, prefix)
	ssh := exec.Command("ssh", "-F", "none", "-i", cert.Key, "-o", "CertificateFile="+cert.Certificate, "-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
		"-tt", "-p", port, "root@"+host, script)
	ssh.Env = append(os.Environ(), "SSH_AUTH_SOCK=")
	seen := &lockedBuffer{}
	ssh.Stdout, ssh.Stderr = seen, seen
	if err := ssh.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ssh.Wait() }()
	t.Cleanup(func() { ssh.Process.Kill() })
	return seen, done
}

// TestPlaybackOnlineBackup (issue 14): a real CA, a real sshward-playback
// serve, a real sshward-agent and stock ssh. Two sessions are finished and
// a third prints 700 numbered lines while `sshward-playback backup` runs
// against the serving directory (through its admin socket). The playback
// server is then killed (SIGKILL: everything after the snapshot is lost
// with it), the backup restored into a fresh directory and served at the
// same address. What each step tries to break:
//
//   - the backup refuses nothing and stops nothing: ingest goes on during
//     it, the session loses no line;
//   - the live recording is captured consistently (whole chunks, the
//     committed bytes) and is resumable by the agent: the restored server
//     takes the rest of the upload from the agent's spool and ends up with
//     a complete, verified recording holding every line exactly once;
//   - the finished recordings are served verified from the restored
//     directory, with their content;
//   - the restored audit chain, with the auditor's views after the
//     restore, verifies; the backup file holds no plain text.
func TestPlaybackOnlineBackup(t *testing.T) {
	c := newAgentCLI(t, "github.com/sshward/sshward/cmd/sshward-playback")
	work := t.TempDir()
	ca := c.startRecordingCA(t, work)

	pbDir := filepath.Join(work, "playback")
	if err := os.MkdirAll(pbDir, 0o700); err != nil {
		t.Fatal(err)
	}
	pbAddr := freeLoopback(t)
	pbURL := "https://" + pbAddr
	pb := c.startPlayback(pbDir, pbAddr, nil, c.playbackJoinArgs(t, ca, work)...)
	sock := filepath.Join(pbDir, "admin.sock")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("admin socket: %v %v", fi, err)
	}
	// Another local user cannot use the socket, even with the directory
	// open to them: its mode alone keeps them out (curl as nobody).
	for d := pbDir; d != filepath.Dir(filepath.Dir(work)); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	nobody := []string{"--reuid=65534", "--regid=65534", "--clear-groups"}
	if out, err := exec.Command("setpriv", append(nobody, "stat", "-c", "%A", sock)...).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "srw-------" {
		t.Fatalf("the socket's path is not open to another user, the check below would prove nothing: %v %q", err, out)
	}
	out, err := exec.Command("setpriv", append(nobody, "curl", "-sS", "--max-time", "20", "--unix-socket", sock,
		"http://sshward-playback/admin/backup", "-o", "/dev/null")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Couldn't connect") {
		t.Fatalf("another user reached the admin socket: %v %q", err, out)
	}
	if err := os.Chmod(pbDir, 0o700); err != nil {
		t.Fatal(err)
	}

	host := c.startRecordedHost(t, ca, work, pbURL)
	auditor := host.auditor
	sessions := func() []sessionSummaryOut {
		res := c.run(auditor, "", "sshward", "sessions", "--json", "--playback", pbURL)
		var list []sessionSummaryOut
		if res.code != 0 || json.Unmarshal([]byte(res.stdout), &list) != nil {
			return nil
		}
		return list
	}
	verified := func(list []sessionSummaryOut, id string) bool {
		return slices.ContainsFunc(list, func(s sessionSummaryOut) bool {
			return s.ID == id && !s.Live && s.Complete && s.Integrity == "verified"
		})
	}

	// Two finished recordings.
	for _, word := range []string{"finished-one-7kq", "finished-two-8lr"} {
		if out, err := sshEcho(host.agentAddr, host.cert, word); err != nil || !strings.Contains(out, word) {
			t.Fatalf("ssh echo %s: %v %q", word, err, out)
		}
	}
	var finished []string
	waitFor(t, "two finished, verified recordings", 90*time.Second, func() bool {
		finished = finished[:0]
		list := sessions()
		for _, s := range list {
			if verified(list, s.ID) {
				finished = append(finished, s.ID)
			}
		}
		return len(finished) == 2
	})

	// A live session printing numbered lines.
	const lines = 700
	seen, sshDone := numberedSession(t, host.agentAddr, host.cert, "backup line", lines)
	var liveID string
	waitFor(t, "60 lines printed and the session live on the playback server", 60*time.Second, func() bool {
		if !strings.Contains(seen.String(), "backup line 00060") {
			return false
		}
		for _, s := range sessions() {
			if s.Live {
				liveID = s.ID
				return true
			}
		}
		return false
	})

	// The online backup, while the upload goes on.
	backupFile := filepath.Join(work, "playback.backup")
	env := "SSHWARD_PLAYBACK_BACKUP_PASSPHRASE=online-backup-pass-3"
	c.env = append(c.env, env)
	var res struct {
		Online   bool             `json:"online"`
		Records  uint64           `json:"audit_records"`
		Finished int              `json:"finished_recordings"`
		Live     []store.LiveCopy `json:"live_recordings"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-playback", "backup", "--dir", pbDir, "--to", backupFile, "--json")), &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("online backup at %q: %+v", lastLine(seen.String()), res)
	if !res.Online || res.Finished != 2 || len(res.Live) != 1 || res.Live[0].ID != liveID || res.Live[0].CastBytes == 0 || res.Records == 0 {
		t.Fatalf("online backup: %+v (live session %s)", res, liveID)
	}
	if strings.Contains(seen.String(), fmt.Sprintf("backup line %05d", lines)) {
		t.Fatal("the session ended before the playback server was killed: nothing was tested")
	}
	raw, err := os.ReadFile(backupFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "backup line") || strings.Contains(string(raw), "finished-one-7kq") || strings.Contains(string(raw), "PRIVATE KEY") {
		t.Fatal("the backup file holds plain text")
	}
	// Ingest went on during the backup: more lines reach the server.
	waitFor(t, "the upload to go on after the backup", 30*time.Second, func() bool {
		return strings.Contains(seen.String(), "backup line 00200")
	})

	// Disaster: the server and its directory are gone.
	if err := pb.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	pb.cmd.Wait()
	if err := os.RemoveAll(pbDir); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(work, "restored")
	if out := c.ok("", "", "sshward-playback", "restore", "--from", backupFile, "--dir", restored); !strings.Contains(out, "audit chain intact") {
		t.Fatalf("restore said %q", out)
	}
	if _, err := os.Stat(filepath.Join(restored, "admin.sock")); err == nil {
		t.Fatal("the restored directory holds the old admin socket")
	}
	rp := c.startPlayback(restored, pbAddr, nil)
	t.Logf("restored server serving; the session is at %q", lastLine(seen.String()))

	select {
	case err := <-sshDone:
		if err != nil {
			t.Fatalf("ssh: %v\n%s", err, seen.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("the session did not finish:\n%s", seen.String())
	}
	t.Logf("session ended")
	waitFor(t, "every recording complete and verified on the restored server", 2*time.Minute, func() bool {
		list := sessions()
		return verified(list, liveID) && verified(list, finished[0]) && verified(list, finished[1])
	})
	t.Logf("all verified on the restored server")
	cast := c.ok(auditor, "", "sshward", "export", liveID, "--playback", pbURL)
	for i := 1; i <= lines; i++ {
		if n := strings.Count(cast, fmt.Sprintf("backup line %05d", i)); n != 1 {
			t.Fatalf("line %d appears %d times in the resumed recording (want once: no gap, no duplicate)", i, n)
		}
	}
	var words []string
	for _, id := range finished {
		words = append(words, c.ok(auditor, "", "sshward", "export", id, "--playback", pbURL))
	}
	all := strings.Join(words, "")
	if !strings.Contains(all, "finished-one-7kq") || !strings.Contains(all, "finished-two-8lr") {
		t.Fatalf("the finished recordings lost their content:\n%s", all)
	}

	// The restored audit chain, with the auditor's exports since, verifies
	// (sshward-playback audit verify, with the server stopped).
	if _, err := os.Stat(filepath.Join(restored, "admin.sock")); err != nil {
		t.Fatalf("the restored server has no admin socket: %v", err)
	}
	rp.stop()
	var av struct {
		OK      bool   `json:"ok"`
		Records uint64 `json:"records"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "", "sshward-playback", "audit", "verify", "--dir", restored, "--json")), &av); err != nil {
		t.Fatal(err)
	}
	if !av.OK || av.Records <= res.Records {
		t.Fatalf("audit verify of the restored directory: %+v (the backup held %d events)", av, res.Records)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: restored})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, err := st.Audit(ctx, store.AuditFilter{Type: "export"})
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, e := range evs {
		exported[e.Subject] = true
	}
	if !exported[liveID] || !exported[finished[0]] || !exported[finished[1]] {
		t.Fatalf("the auditor's exports are not in the restored audit chain: %+v", evs)
	}
}
