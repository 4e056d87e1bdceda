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
	s3, r, dir, list := archivingCA(t, "")
	full := len(list) / 5 * 5
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
	var err error
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

type listedEvent struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// archivingCA makes a CA whose config archives the audit log to a real
// S3 server in segments of 5 (extra: more audit.archive keys), with 12
// users added (the log has at least 10 events), and returns its log.
func archivingCA(t *testing.T, extra string) (*s3test.Server, *runner, string, []listedEvent) {
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
	fmt.Fprintf(cfg, "audit:\n  archive:\n    segment: 5\n    every: 1s\n%s    s3:\n      endpoint: %s\n      bucket: %s\n      prefix: ca1/\n      access_key: %s\n      ca_file: %s\n",
		extra, s3.Endpoint, s3.Bucket, s3.AccessKey, s3.CertFile())
	cfg.Close()
	for i := range 12 {
		r.ok(fmt.Sprintf("password-user-%d\n", i), "sshward-ca", "users", "add", fmt.Sprintf("user%d", i), "--dir", dir, "--groups", "engineers", "--password-stdin")
	}
	var list []listedEvent
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", dir, "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) < 10 {
		t.Fatalf("only %d audit events", len(list))
	}
	return s3, r, dir, list
}

// TestAuditArchivePrunedFromStore: with audit.archive.prune the running
// CA drops archived events from its store; `audit verify` (through the
// running CA's socket, then on the stopped CA's store) checks the bucket's
// segments and the store's part as one chain and says so; `audit list`
// gives every event, the archived ones read from the bucket, the same as
// before the prune; a segment deleted from the bucket makes `audit
// verify` fail naming where; without the archive in config.yaml, `audit
// list` says the events are archived.
func TestAuditArchivePrunedFromStore(t *testing.T) {
	s3, r, dir, list := archivingCA(t, "    prune: true\n")
	full := uint64(len(list) / 5 * 5)
	cmd := startCA(t, r, dir, freeAddr(t))
	type verified struct {
		OK       bool   `json:"ok"`
		Records  int    `json:"records"`
		Head     string `json:"head"`
		Error    string `json:"error"`
		Seq      uint64 `json:"seq"`
		Segments *int   `json:"segments"`
		Archived *struct {
			Seq    uint64 `json:"seq"`
			Pruned uint64 `json:"pruned"`
		} `json:"archived"`
	}
	var v verified
	deadline := time.Now().Add(60 * time.Second)
	for {
		v = verified{}
		if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "verify", "--dir", dir, "--json")), &v); err != nil {
			t.Fatal(err)
		}
		if v.Archived != nil && v.Archived.Seq >= full && v.Archived.Pruned == v.Archived.Seq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the running CA did not prune its archived events within 60 s: %+v", v)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !v.OK || v.Segments == nil || uint64(*v.Segments)*5 != v.Archived.Seq || v.Records < len(list) {
		t.Fatalf("audit verify through the running CA: %+v", v)
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()

	out := r.ok("", "sshward-ca", "audit", "verify", "--dir", dir)
	if !strings.Contains(out, "audit chain intact") || !strings.Contains(out, fmt.Sprintf("records 1-%d from %d archived segments", v.Archived.Seq, *v.Segments)) {
		t.Fatalf("audit verify said %q", out)
	}
	var after []listedEvent
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", dir, "--json")), &after); err != nil {
		t.Fatal(err)
	}
	if len(after) < len(list) {
		t.Fatalf("audit list after the prune: %d events, %d before", len(after), len(list))
	}
	for i, ev := range list {
		if after[i] != ev {
			t.Fatalf("audit list after the prune: event %d is %+v, was %+v", i, after[i], ev)
		}
	}
	var page []listedEvent
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", dir, "--after", "3", "--limit", "4", "--json")), &page); err != nil {
		t.Fatal(err)
	}
	if len(page) != 4 || page[0] != list[3] || page[3] != list[6] {
		t.Fatalf("audit list --after 3 --limit 4: %+v", page)
	}

	// The attacker deletes the second segment from the bucket.
	seg := filepath.Join(s3.Dir, s3.Bucket, "ca1", "audit", fmt.Sprintf("%020d-%020d.jsonl", 6, 10))
	orig, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(seg)
	res := r.run("", "sshward-ca", "audit", "verify", "--dir", dir)
	if res.code != 1 || !strings.Contains(res.stderr, "audit chain broken") || !strings.Contains(res.stderr, "seq 6") {
		t.Fatalf("audit verify with a segment deleted: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	os.WriteFile(seg, orig, 0o600)

	// Without the archive in config.yaml: the archived events are named.
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfgPath, []byte(strings.Replace(string(cfg), "    prune: true\n", "", 1)), 0o600)
	res = r.run("", "sshward-ca", "audit", "list", "--dir", dir)
	if res.code != 0 || !strings.Contains(res.stderr, fmt.Sprintf("events 1-%d were archived", v.Archived.Seq)) {
		t.Fatalf("audit list without the archive's prune: exit %d\nstderr: %s", res.code, res.stderr)
	}
}
