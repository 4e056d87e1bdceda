package ca_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/etcdtest"
)

// TestSerialsAboveRecordsThatLeft: certificate records leave etcd
// (cert_keep), but no replica hands out a serial at or below one recorded
// before, even with its clock an hour behind and its counter seeded before
// that serial existed: a running replica re-reads the store's serial
// high-water mark (every tenth of the least time a record stays), a
// restarted one seeds from it. Without the mark both would draw below
// (their clocks put the serial's milliseconds an hour back).
func TestSerialsAboveRecordsThatLeft(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t, 1)
	prefix := fmt.Sprintf("serials-%d", time.Now().UnixNano())
	open := func() *store.DB {
		db, err := store.Open(ctx, store.Options{Etcd: &store.EtcdOptions{Endpoints: c.Endpoints(), Prefix: prefix,
			CertKeep: time.Second, ExpiryGrace: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	behind := func() time.Time { return time.Now().Add(-time.Hour) }
	other := open()
	// Replica B runs (counter seeded now) with its clock an hour behind.
	b := catest.New(t, catest.Options{Store: open(), Now: behind})
	b.AddUser(t, "alice", "correct-horse-battery", []string{"engineers"}, false)
	alice := b.Client(t, b.Login(t, "alice", "correct-horse-battery", ""))

	// Another replica records serial S (its clock right) for a certificate
	// that expires at once; the record leaves etcd soon after.
	s := uint64(time.Now().UnixMilli())<<20 | 12345
	if err := other.Update(ctx, func(tx *store.Tx) error {
		return tx.PutCert(&store.CertRecord{Serial: s, KeyID: "elsewhere", Kind: store.CertKindUser, Tier: "staging", ValidBefore: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := other.View(ctx, func(tx *store.Tx) error { _, err := tx.GetCert(s); return err })
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the record of serial %d is still in etcd after 60 s (%v)", s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	_, pub := keyPair(t, t.TempDir(), "k")
	resp, err := alice.Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Serial <= s {
		t.Fatalf("replica B (clock an hour behind) issued serial %d, at or below %d recorded before", resp.Serial, s)
	}
	// A replica started now, clock two hours behind.
	r := catest.New(t, catest.Options{Store: open(), Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
	bob := r.Client(t, r.Login(t, "alice", "correct-horse-battery", ""))
	resp2, err := bob.Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if resp2.Serial <= resp.Serial {
		t.Fatalf("a restarted replica issued serial %d, at or below %d recorded before", resp2.Serial, resp.Serial)
	}
}
