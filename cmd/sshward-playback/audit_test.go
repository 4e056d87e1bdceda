package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sshward/sshward/playback/store"
)

// TestAuditVerify: audit verify reports an intact chain with its length
// (as JSON with the fields of sshward-ca audit verify), refuses while the
// server holds the index, and finds an edited record (exit 1, where).
func TestAuditVerify(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"ivy", "audrey", "ivy"} {
		if _, err := st.AppendAudit(ctx, store.AuditEvent{Type: "view", Actor: who, Subject: "s1", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(ctx, []string{"audit", "verify", "--dir", dir}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "stop sshward-playback first") {
		t.Fatalf("verify while the index is open: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"audit", "verify", "--dir", dir, "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var res auditVerifyResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || !res.OK || res.Records != 3 || res.Head == "" {
		t.Fatalf("verify --json: %v %s", err, out.String())
	}

	// An auditor's view rewritten to another name: the chain breaks there.
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		k := binary.BigEndian.AppendUint64(nil, 2)
		return b.Put(k, bytes.Replace(b.Get(k), []byte(`"audrey"`), []byte(`"nobody"`), 1))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = run(ctx, []string{"audit", "verify", "--dir", dir, "--json"}, &out, io.Discard)
	if err == nil || json.Unmarshal(out.Bytes(), &res) != nil || res.OK || res.Seq != 2 {
		t.Fatalf("verify of an edited log: %v %s", err, out.String())
	}
}
