package auditarchive_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sshward/sshward/ca/auditarchive"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/etcdtest"
	"github.com/sshward/sshward/playback/objstore"
	"github.com/sshward/sshward/playback/objstore/s3test"
)

// issue records n short-lived certificates with their audit events, as
// the CA does (one transaction each), spread over the replicas at once.
func issue(t *testing.T, dbs []*store.DB, serial *atomic.Uint64, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(dbs))
	for i, db := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range (n + len(dbs) - 1 - i) / len(dbs) {
				s := serial.Add(1)
				err := db.Update(context.Background(), func(tx *store.Tx) error {
					if err := tx.PutCert(&store.CertRecord{Serial: s, KeyID: fmt.Sprint("alice serial=", s), Kind: store.CertKindUser,
						Tier: "staging", ValidBefore: time.Now().Add(time.Second)}); err != nil {
						return err
					}
					return tx.AppendAudit(&store.AuditEvent{Type: "cert.issue", Actor: "alice", Serial: s, Tier: "staging"})
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// keysUnder counts the keys etcd holds under prefix.
func keysUnder(t *testing.T, cli *clientv3.Client, prefix string) int64 {
	t.Helper()
	r, err := cli.Get(t.Context(), prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return r.Count
}

// TestPruneOnEtcdBounded: three CA replicas (stores on one etcd prefix)
// issue short-lived certificates while each one archives the audit log to
// a real S3 server (versitygw) and prunes it, every pass cut short at a
// random point (a crash between two transactions), while a verifier
// checks bucket and store as one chain all along. Then: once the leases
// end, the keys under the prefix fall back to a bound (the audit tail of
// less than a segment and a few fixed keys) and a second round of the same
// size ends at the same bound; `audit list`'s read gives every event from
// bucket and store; a segment deleted, edited or dropped at the end of the
// bucket, or a checkpoint edited in etcd, is found; a segment edited
// before it was pruned is refused and nothing of it leaves the store.
func TestPruneOnEtcdBounded(t *testing.T) {
	const (
		segment = 50
		n       = 600
	)
	ctx := t.Context()
	c := etcdtest.Start(t, 1)
	s3 := s3test.Start(t)
	b, err := objstore.Open(ctx, objstore.Config{Endpoint: s3.Endpoint, Bucket: s3.Bucket, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, HTTPClient: s3.HTTPClient})
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("bounded-%d", time.Now().UnixNano())
	var dbs []*store.DB
	for range 3 {
		db, err := store.Open(ctx, store.Options{Etcd: &store.EtcdOptions{Endpoints: c.Endpoints(), Prefix: prefix,
			CertKeep: time.Second, ExpiryGrace: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	var serial atomic.Uint64
	var peak atomic.Int64
	round := func(name string) {
		// Archivers and pruners on every replica, cut short at random,
		// and a verifier, while the replicas issue.
		actx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		verr := make(chan error, 1)
		for _, db := range dbs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for actx.Err() == nil {
					pctx, cancel := context.WithTimeout(actx, time.Duration(rand.IntN(200))*time.Millisecond)
					if _, err := auditarchive.Archive(pctx, db, b, segment); err == nil {
						auditarchive.Prune(pctx, db, b, segment, ^uint64(0))
					}
					cancel()
				}
			}()
		}
		wg.Add(1)
		go func() { // the keys under the prefix at their highest
			defer wg.Done()
			for actx.Err() == nil {
				if r, err := cli.Get(actx, prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil && r.Count > peak.Load() {
					peak.Store(r.Count)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for actx.Err() == nil {
				srep, err := dbs[2].VerifyAudit(actx)
				if err == nil {
					_, err = auditarchive.VerifyWithStore(actx, b, srep, dbs[2])
				}
				if err != nil && actx.Err() == nil {
					verr <- err
					return
				}
			}
		}()
		issue(t, dbs, &serial, n)
		stop()
		wg.Wait()
		select {
		case err := <-verr:
			t.Fatalf("%s: the chain did not verify while replicas issued, archived and pruned: %v", name, err)
		default:
		}
		// A last pass that is not cut short.
		if _, err := auditarchive.Archive(ctx, dbs[0], b, segment); err != nil {
			t.Fatal(err)
		}
		if _, err := auditarchive.Prune(ctx, dbs[1], b, segment, ^uint64(0)); err != nil {
			t.Fatal(err)
		}
	}
	// bound: the audit tail (less than a segment) plus the fixed keys
	// (schema, audit head, checkpoint, serial high-water mark, the audit
	// bucket's delete mark, one commit key per replica).
	const bound = segment - 1 + 5 + 3
	settle := func(name string) int64 {
		deadline := time.Now().Add(90 * time.Second)
		for {
			k := keysUnder(t, cli, prefix)
			if k <= bound {
				return k
			}
			if time.Now().After(deadline) {
				r, _ := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(20))
				var some []string
				for _, kv := range r.Kvs {
					some = append(some, string(kv.Key))
				}
				t.Fatalf("%s: %d keys under the prefix 90 s after the certificates expired, want at most %d; some: %q", name, k, bound, some)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	round("round 1")
	k1 := settle("round 1")
	round("round 2")
	k2 := settle("round 2")
	t.Logf("keys under the prefix: at most %d while issuing, %d once the leases ended after %d issuances; %d after %d more", peak.Load(), k1, n, k2, n)
	if peak.Load() < 2*bound {
		t.Fatalf("at most %d keys while %d certificates were issued: they were not recorded", peak.Load(), n)
	}

	srep, err := dbs[0].VerifyAudit(ctx)
	if err != nil || srep.Records != 2*n || srep.Archived.Seq != 2*n/segment*segment || srep.Archived.Pruned != srep.Archived.Seq {
		t.Fatalf("the store's part: %+v %v", srep, err)
	}
	rep, err := auditarchive.VerifyWithStore(ctx, b, srep, dbs[0])
	if err != nil || rep.Segments != 2*n/segment {
		t.Fatalf("VerifyWithStore: %+v %v", rep, err)
	}
	if max, err := maxSerial(dbs[1]); err != nil || max != serial.Load() {
		t.Fatalf("MaxSerial with every record gone = %d %v, want %d", max, err, serial.Load())
	}
	archived, through, err := auditarchive.Events(ctx, b, 0, "", 0)
	if err != nil || len(archived) != int(srep.Archived.Seq) || through != srep.Archived.Seq {
		t.Fatalf("Events from the bucket: %d through %d, %v", len(archived), through, err)
	}
	for i, ev := range archived {
		if ev.Seq != uint64(i+1) || ev.Type != "cert.issue" {
			t.Fatalf("archived event %d: %+v", i, ev)
		}
	}

	broken := func(what string, wantSeq uint64, reason string) {
		t.Helper()
		srep, err := dbs[0].VerifyAudit(ctx)
		if err == nil {
			_, err = auditarchive.VerifyWithStore(ctx, b, srep, dbs[0])
		}
		var ce *store.ChainError
		if !errors.As(err, &ce) || ce.Seq != wantSeq || !strings.Contains(ce.Reason, reason) {
			t.Fatalf("%s: verify said %v, want the chain broken at %d (%s)", what, err, wantSeq, reason)
		}
	}
	file := func(first uint64) string {
		return filepath.Join(s3.Dir, s3.Bucket, auditarchive.Key(first, first+segment-1))
	}
	// A segment in the middle deleted.
	mid, err := os.ReadFile(file(301))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(file(301))
	broken("a deleted segment", 301, "segment missing")
	// Edited.
	os.WriteFile(file(301), []byte(strings.Replace(string(mid), `"alice"`, `"mallory"`, 1)), 0o600)
	broken("an edited segment", 301, "digest")
	os.WriteFile(file(301), mid, 0o600)
	// The last segments (up to the checkpoint) dropped: a gap before the
	// store's part.
	lastFirst := srep.Archived.Seq - segment + 1
	last, err := os.ReadFile(file(lastFirst))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(file(lastFirst))
	broken("the bucket's last segment dropped", lastFirst, "segments missing")
	os.WriteFile(file(lastFirst), last, 0o600)
	if _, err := auditarchive.VerifyWithStore(ctx, b, srep, dbs[0]); err != nil {
		t.Fatalf("restored: %v", err)
	}

	// A segment edited in the bucket before it is pruned: refused, the
	// store keeps its events.
	issue(t, dbs, &serial, segment)
	if w, err := auditarchive.Archive(ctx, dbs[0], b, segment); err != nil || w != 1 {
		t.Fatalf("archive one more segment: %d %v", w, err)
	}
	next := srep.Archived.Seq + 1
	seg, err := os.ReadFile(file(next))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file(next), []byte(resealed(t, strings.Replace(string(seg), `"alice"`, `"mallory"`, 1))), 0o600)
	if p, err := auditarchive.Prune(ctx, dbs[1], b, segment, ^uint64(0)); err == nil || !strings.Contains(err.Error(), "differs") || p != 0 {
		t.Fatalf("Prune of an edited segment: %d, %v; want refused", p, err)
	}
	if cp, err := dbs[2].AuditCheckpoint(ctx); err != nil || cp.Seq != srep.Archived.Seq {
		t.Fatalf("checkpoint after a refused prune: %+v %v", cp, err)
	}
	os.WriteFile(file(next), seg, 0o600)
	if p, err := auditarchive.Prune(ctx, dbs[1], b, segment, ^uint64(0)); err != nil || p != 1 {
		t.Fatalf("Prune after the segment was restored: %d %v", p, err)
	}

	// The checkpoint edited in etcd (the attacker hides events by
	// pointing it further): the store's chain no longer links.
	key := prefix + "/internal/=audit_archived"
	r, err := cli.Get(ctx, key)
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("get %s: %v", key, err)
	}
	orig := string(r.Kvs[0].Value)
	cp, _ := dbs[0].AuditCheckpoint(ctx)
	forged := strings.Replace(orig, cp.Hash, strings.Repeat("0", 64), 1)
	if _, err := cli.Put(ctx, key, forged); err != nil {
		t.Fatal(err)
	}
	if _, err := dbs[0].VerifyAudit(ctx); err == nil {
		t.Fatal("VerifyAudit passed with a forged checkpoint hash")
	}
	cli.Put(ctx, key, orig)
}

func maxSerial(db *store.DB) (uint64, error) {
	var m uint64
	err := db.View(context.Background(), func(tx *store.Tx) error {
		var err error
		m, err = tx.MaxSerial()
		return err
	})
	return m, err
}
