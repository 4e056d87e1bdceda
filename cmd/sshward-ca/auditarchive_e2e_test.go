package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/playback/objstore/s3test"
)

// TestAuditArchiveToS3: sshward-ca serve with audit.archive.s3 on a real
// S3-compatible server (versitygw) writes the audit log as sealed segments
// of 5 events; `sshward-ca audit verify --from-s3` checks them from the
// bucket alone (the CA stopped, its store not opened) and names the head
// the store has; one edited event in one segment file (the attacker's
// means: write access to the bucket) makes it fail, exit 1, naming where.
func TestAuditArchiveToS3(t *testing.T) {
	s3 := s3test.Start(t)
	work := t.TempDir()
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSHWARD_HOME=" + filepath.Join(work, "home"),
		"SSH_AUTH_SOCK=", "SSHWARD_S3_SECRET_KEY=" + s3.SecretKey}}
	dir := filepath.Join(work, "ca")
	r.ok("", "sshward-ca", "init", "--dir", dir)
	cfg, err := os.OpenFile(filepath.Join(dir, "config.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(cfg, "audit:\n  archive:\n    segment: 5\n    every: 1s\n    s3:\n      endpoint: %s\n      bucket: %s\n      prefix: ca1/\n      access_key: %s\n      ca_file: %s\n",
		s3.Endpoint, s3.Bucket, s3.AccessKey, s3.CertFile())
	cfg.Close()
	for i := range 12 {
		r.ok(fmt.Sprintf("password-user-%d\n", i), "sshward-ca", "users", "add", fmt.Sprintf("user%d", i), "--dir", dir, "--groups", "engineers", "--password-stdin")
	}
	var list []struct {
		Seq  uint64 `json:"seq"`
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", dir, "--json")), &list); err != nil {
		t.Fatal(err)
	}
	full := len(list) / 5 * 5
	if full < 10 {
		t.Fatalf("only %d audit events", len(list))
	}
	cmd := startCA(t, r, dir, freeAddr(t))
	segDir := filepath.Join(s3.Dir, s3.Bucket, "ca1", "audit")
	deadline := time.Now().Add(60 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(segDir, "*.jsonl"))
		if len(files) >= full/5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d segments in the bucket after 60 s, want %d", len(files), full/5)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()

	var rep struct {
		OK       bool   `json:"ok"`
		Segments int    `json:"segments"`
		Records  uint64 `json:"records"`
		Head     string `json:"head"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "verify", "--dir", dir, "--from-s3", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Records < uint64(full) || rep.Records%5 != 0 || rep.Head != list[rep.Records-1].Hash {
		t.Fatalf("verify --from-s3: %+v; want at least %d records ending at the store's hash of that event", rep, full)
	}
	if out := r.ok("", "sshward-ca", "audit", "verify", "--dir", dir, "--from-s3"); !strings.Contains(out, "audit archive intact") {
		t.Fatalf("verify --from-s3 said %q", out)
	}

	// The attacker edits one event of the second segment.
	seg := filepath.Join(segDir, fmt.Sprintf("%020d-%020d.jsonl", 6, 10))
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), `"user`, `"mallory`, 1)
	if edited == string(b) {
		t.Fatalf("segment 6-10 names no user:\n%s", b)
	}
	if err := os.WriteFile(seg, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	res := r.run("", "sshward-ca", "audit", "verify", "--dir", dir, "--from-s3")
	if res.code != 1 || !strings.Contains(res.stderr, "audit archive broken") || !strings.Contains(res.stderr, "seq 6") {
		t.Fatalf("verify --from-s3 after an edit: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
}
