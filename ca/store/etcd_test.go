package store_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/etcdtest"
	"github.com/sshward/sshward/ca/store/storetest"
)

// TestSuiteOnEtcd runs this package's whole test suite again with every
// storetest store opened on a real 3-member etcd cluster: the etcd engine
// must keep every promise the bbolt one keeps (tests about the bbolt file
// itself skip themselves with storetest.BoltOnly). The TestEtcd* tests start
// their own clusters and run once, here, not again inside the etcd run.
func TestSuiteOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite again")
	}
	c := etcdtest.Start(t, 3)
	args := []string{"-test.count=1", "-test.skip=^(TestSuiteOnEtcd|TestEtcd.*|Fuzz.*)$", "-test.timeout=5m", "-test.v"}
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), storetest.EnvEtcd+"="+strings.Join(c.Endpoints(), ","))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the store suite on etcd failed: %v\n%s", err, out)
	}
	passed, skipped := strings.Count(string(out), "\n--- PASS: Test"), strings.Count(string(out), "\n--- SKIP: Test")
	if passed < 20 {
		t.Fatalf("the store suite on etcd ran only %d tests:\n%s", passed, out)
	}
	t.Logf("store suite on etcd: %d tests passed, %d about the bbolt file skipped", passed, skipped)
}

// openReplicas opens n stores on one prefix of c, as n CA replicas do.
func openReplicas(t *testing.T, c *etcdtest.Cluster, n int, now func() time.Time) []*store.DB {
	t.Helper()
	prefix := fmt.Sprintf("replicas-%d", time.Now().UnixNano())
	var dbs []*store.DB
	for i := range n {
		// Each replica talks to a different member first.
		eps := append(c.Endpoints()[i%3:], c.Endpoints()[:i%3]...)
		db, err := store.Open(context.Background(), store.Options{Now: now, Etcd: &store.EtcdOptions{Endpoints: eps, Prefix: prefix}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	return dbs
}

// TestEtcdReplicasOnce races writers through three stores on one etcd
// prefix, each with its own group committer, as three CA replicas would:
// what must happen once happens once, and the audit chain stays one
// verifying chain.
func TestEtcdReplicasOnce(t *testing.T) {
	c := etcdtest.Start(t, 3)
	dbs := openReplicas(t, c, 3, fixedNow)
	ctx := t.Context()

	// The attack: 3 replicas × 8 goroutines claim the same serial and
	// consume the same join token at once.
	mustUpdate(t, dbs[0], func(tx *store.Tx) error {
		return tx.PutJoinToken(&store.JoinToken{ID: id("race"), Kind: store.JoinKindHost, Names: []string{"h"}, ExpiresAt: t0.Add(time.Hour)})
	})
	var claims, joins, audits atomic.Int64
	var wg sync.WaitGroup
	for r, db := range dbs {
		for g := range 8 {
			wg.Go(func() {
				err := db.Update(ctx, func(tx *store.Tx) error {
					if _, err := tx.ClaimSerial(&store.Claim{Serial: 77, Host: fmt.Sprintf("h%d-%d", r, g), SessionID: "s", ExpiresAt: t0.Add(time.Hour)}); err != nil {
						return err
					}
					return tx.AppendAudit(&store.AuditEvent{Type: "single_use.claim", Serial: 77, Subject: fmt.Sprintf("h%d-%d", r, g)})
				})
				switch {
				case err == nil:
					claims.Add(1)
				case !errors.Is(err, store.ErrClaimed):
					t.Errorf("claim: %v", err)
				}
				err = db.Update(ctx, func(tx *store.Tx) error {
					_, err := tx.ConsumeJoinToken(id("race"), t0)
					return err
				})
				switch {
				case err == nil:
					joins.Add(1)
				case !errors.Is(err, store.ErrTokenUsed):
					t.Errorf("join: %v", err)
				}
				for i := range 5 {
					if err := db.Update(ctx, func(tx *store.Tx) error {
						return tx.AppendAudit(&store.AuditEvent{Type: "test", Actor: fmt.Sprintf("r%d-g%d-%d", r, g, i)})
					}); err != nil {
						t.Errorf("audit: %v", err)
						return
					}
					audits.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if claims.Load() != 1 || joins.Load() != 1 {
		t.Fatalf("claims %d, joins %d succeeded; want exactly 1 each", claims.Load(), joins.Load())
	}
	for i, db := range dbs {
		rep, err := db.VerifyAudit(ctx)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		if want := int(audits.Load()) + 1; rep.Records != want {
			t.Fatalf("replica %d: %d audit records, want %d (every acknowledged append, once)", i, rep.Records, want)
		}
	}
	// A write on one replica is read on another at once.
	mustUpdate(t, dbs[1], func(tx *store.Tx) error {
		return tx.PutSession(&store.Session{ID: id("s1"), User: "alice", ExpiresAt: t0.Add(time.Hour)})
	})
	mustView(t, dbs[2], func(tx *store.Tx) error {
		ok, err := tx.SessionNotRevoked(id("s1"))
		if !ok || err != nil {
			t.Errorf("session made on replica 1 not live on replica 2: %v %v", ok, err)
		}
		return nil
	})
	mustUpdate(t, dbs[0], func(tx *store.Tx) error {
		_, err := tx.RevokeUserSessions("alice", t0)
		return err
	})
	mustView(t, dbs[2], func(tx *store.Tx) error {
		if ok, _ := tx.SessionNotRevoked(id("s1")); ok {
			t.Error("session revoked on replica 0 still live on replica 2")
		}
		return nil
	})
}

// BenchmarkEtcdIssueRecord is the store half of an issuance (PutCert and
// its audit event in one Update) at 64 concurrent writers spread over
// replicas stores on one 3-member etcd cluster, beside the same on a
// bbolt file: go test -run XXX -bench EtcdIssueRecord ./ca/store
func BenchmarkEtcdIssueRecord(b *testing.B) {
	c := etcdtest.Start(b, 3)
	for _, engine := range []string{"bbolt", "etcd-1-replica", "etcd-3-replicas"} {
		b.Run(engine, func(b *testing.B) {
			var dbs []*store.DB
			switch engine {
			case "bbolt":
				dbs = []*store.DB{storetest.MustOpenWith(b, store.Options{Path: b.TempDir() + "/ca.db"})}
			case "etcd-1-replica":
				dbs = openReplicasB(b, c, 1)
			default:
				dbs = openReplicasB(b, c, 3)
			}
			var serial atomic.Uint64
			b.SetParallelism(32) // 64 writers on 2 cores
			start := time.Now()
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					s := serial.Add(1)
					db := dbs[s%uint64(len(dbs))]
					err := db.Update(context.Background(), func(tx *store.Tx) error {
						if err := tx.PutCert(&store.CertRecord{Serial: s, KeyID: fmt.Sprintf("k%d", s), Kind: store.CertKindUser, ValidBefore: t0.Add(time.Hour)}); err != nil {
							return err
						}
						return tx.AppendAudit(&store.AuditEvent{Type: "cert.issue", Serial: s})
					})
					if err != nil {
						b.Error(err)
						return
					}
					n.Add(1)
				}
			})
			b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "issues/s")
			var commits, conflicts uint64
			for _, db := range dbs {
				s := db.CommitStats()
				commits, conflicts = commits+s.Commits, conflicts+s.Conflicts
			}
			b.ReportMetric(float64(conflicts)/float64(max(commits, 1)), "conflicts/commit")
		})
	}
}

func openReplicasB(b *testing.B, c *etcdtest.Cluster, n int) []*store.DB {
	prefix := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	var dbs []*store.DB
	for i := range n {
		eps := append(c.Endpoints()[i%3:], c.Endpoints()[:i%3]...)
		db, err := store.Open(context.Background(), store.Options{Etcd: &store.EtcdOptions{Endpoints: eps, Prefix: prefix}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	return dbs
}

// TestEtcdAuditTamperDetected edits, deletes and truncates audit records
// straight in etcd (as someone with cluster credentials could) and
// expects VerifyAudit, through any replica, to name the broken seq.
func TestEtcdAuditTamperDetected(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := t.Context()
	for _, tc := range []struct {
		name    string
		seq     uint64
		tamper  func(cli *clientv3.Client, key string) error
		wantSeq uint64
	}{
		{"record edited", 3, func(cli *clientv3.Client, key string) error {
			r, err := cli.Get(ctx, key)
			if err != nil || len(r.Kvs) != 1 {
				return fmt.Errorf("get %q: %v", key, err)
			}
			_, err = cli.Put(ctx, key, strings.Replace(string(r.Kvs[0].Value), "actor-3", "actor-X", 1))
			return err
		}, 3},
		{"record deleted", 2, func(cli *clientv3.Client, key string) error {
			_, err := cli.Delete(ctx, key)
			return err
		}, 2},
		{"tail truncated", 5, func(cli *clientv3.Client, key string) error {
			_, err := cli.Delete(ctx, key)
			return err
		}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dbs := openReplicas(t, c, 2, fixedNow)
			for i := range 5 {
				mustUpdate(t, dbs[i%2], func(tx *store.Tx) error {
					return tx.AppendAudit(&store.AuditEvent{Type: "test", Actor: fmt.Sprintf("actor-%d", i+1)})
				})
			}
			if rep, err := dbs[1].VerifyAudit(ctx); err != nil || rep.Records != 5 {
				t.Fatalf("before: %+v %v", rep, err)
			}
			cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			prefix := strings.TrimSuffix(dbs[0].Describe()[strings.LastIndex(dbs[0].Describe(), " ")+1:], "/")
			key := prefix + "/audit/=" + string(binary.BigEndian.AppendUint64(nil, tc.seq))
			if err := tc.tamper(cli, key); err != nil {
				t.Fatal(err)
			}
			for i, db := range dbs {
				_, err := db.VerifyAudit(ctx)
				var ce *store.ChainError
				if !errors.As(err, &ce) || ce.Seq != tc.wantSeq {
					t.Errorf("replica %d: VerifyAudit = %v, want a chain error at seq %d", i, err, tc.wantSeq)
				}
			}
		})
	}
}

// TestEtcdExpiredRecordsLeave: a session past its expiry and grace leaves
// etcd by itself (a shared lease), while a certificate record stays.
func TestEtcdExpiredRecordsLeave(t *testing.T) {
	c := etcdtest.Start(t, 3)
	db, err := store.Open(t.Context(), store.Options{Etcd: &store.EtcdOptions{Endpoints: c.Endpoints(),
		Prefix: fmt.Sprintf("expiry-%d", time.Now().UnixNano()), ExpiryGrace: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustUpdate(t, db, func(tx *store.Tx) error {
		for i := range 20 { // twenty sessions expiring together share one lease
			if err := tx.PutSession(&store.Session{ID: id(fmt.Sprint("s", i)), User: "u", ExpiresAt: time.Now().Add(time.Second)}); err != nil {
				return err
			}
		}
		return tx.PutCert(&store.CertRecord{Serial: 1, KeyID: "k", Kind: store.CertKindUser, ValidBefore: time.Now().Add(time.Second)})
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		mustView(t, db, func(tx *store.Tx) error {
			l, err := tx.ListSessions()
			n = len(l)
			return err
		})
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d expired sessions still in etcd 30 s after expiry + 1 s grace", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mustView(t, db, func(tx *store.Tx) error {
		if _, err := tx.GetCert(1); err != nil {
			t.Errorf("the certificate record left with the sessions: %v", err)
		}
		return nil
	})
}

// TestEtcdTLS: a cluster that requires client certificates is reached
// with EtcdOptions' CA, Cert and Key; without the client certificate the
// store does not open.
func TestEtcdTLS(t *testing.T) {
	c := etcdtest.StartTLS(t, 3)
	prefix := fmt.Sprintf("tls-%d", time.Now().UnixNano())
	db, err := store.Open(t.Context(), store.Options{Now: fixedNow, Etcd: &store.EtcdOptions{Endpoints: c.Endpoints(), Prefix: prefix,
		CA: c.TLS.CA, Cert: c.TLS.Cert, Key: c.TLS.Key}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustUpdate(t, db, func(tx *store.Tx) error { return tx.AppendAudit(&store.AuditEvent{Type: "test"}) })
	if rep, err := db.VerifyAudit(t.Context()); err != nil || rep.Records != 1 {
		t.Fatalf("over TLS: %+v %v", rep, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if db2, err := store.Open(ctx, store.Options{Etcd: &store.EtcdOptions{Endpoints: c.Endpoints(), Prefix: prefix, CA: c.TLS.CA}}); err == nil {
		db2.Close()
		t.Fatal("the store opened on a cluster requiring client certificates without one")
	}
}

// TestEtcdCertRecordsLeave: with CertKeep a certificate record and its key
// id index entry leave etcd that long after the certificate expires (a
// shared lease); the serial high-water mark stays, so MaxSerial does not
// go back, and revocation by key id finds nothing rather than failing.
func TestEtcdCertRecordsLeave(t *testing.T) {
	c := etcdtest.Start(t, 1)
	db, err := store.Open(t.Context(), store.Options{Etcd: &store.EtcdOptions{Endpoints: c.Endpoints(),
		Prefix: fmt.Sprintf("certkeep-%d", time.Now().UnixNano()), ExpiryGrace: time.Second, CertKeep: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := db.CertKeepFloor(); got != time.Second {
		t.Fatalf("CertKeepFloor = %v, want min(CertKeep, MinCertKeep) = 1s", got)
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		for s := uint64(1); s <= 20; s++ {
			if err := tx.PutCert(&store.CertRecord{Serial: 1000 + s, KeyID: "k", Kind: store.CertKindUser, ValidBefore: time.Now().Add(time.Second)}); err != nil {
				return err
			}
		}
		// Not expiring soon: stays.
		return tx.PutCert(&store.CertRecord{Serial: 7, KeyID: "long", Kind: store.CertKindUser, ValidBefore: time.Now().Add(time.Hour)})
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		var left []store.CertRecord
		mustView(t, db, func(tx *store.Tx) error {
			var err error
			left, err = tx.ListCerts(store.CertFilter{})
			return err
		})
		if len(left) == 1 && left[0].Serial == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d certificate records in etcd 60 s after expiry + 1 s keep + 1 s grace; want only serial 7", len(left))
		}
		time.Sleep(200 * time.Millisecond)
	}
	mustView(t, db, func(tx *store.Tx) error {
		if max, err := tx.MaxSerial(); err != nil || max != 1020 {
			t.Errorf("MaxSerial after the records left = %d, %v; want 1020 (the high-water mark)", max, err)
		}
		if recs, err := tx.CertsByKeyID("k"); err != nil || len(recs) != 0 {
			t.Errorf("CertsByKeyID of expired records = %v, %v; want none", recs, err)
		}
		if _, err := tx.GetCert(1005); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetCert(1005) = %v, want ErrNotFound", err)
		}
		return nil
	})
}
