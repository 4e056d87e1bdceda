package notify_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/notify"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/etcdtest"
)

type counting struct {
	mu   sync.Mutex
	seqs map[uint64]int
}

func (c *counting) Notify(_ context.Context, ev store.AuditEvent) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seqs[ev.Seq]++
	return nil
}

// TestReplicasDeliverOnce: three CA replicas on one etcd cluster each run
// a dispatcher for the same notifier; every audit event is delivered once
// (one replica owns the notifier), not once per replica, and the cursor
// ends at the last event.
func TestReplicasDeliverOnce(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	prefix := fmt.Sprintf("notify-%d", time.Now().UnixNano())
	sink := &counting{seqs: map[uint64]int{}}
	var dbs []*store.DB
	var wg sync.WaitGroup
	for range 3 {
		db, err := store.Open(ctx, store.Options{Etcd: &store.EtcdOptions{Endpoints: c.Endpoints(), Prefix: prefix}})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		dbs = append(dbs, db)
		d, err := notify.New(notify.Config{Store: db, Targets: []notify.Target{{Name: "siem", Notifier: sink}}, Poll: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { d.Run(ctx) })
	}
	const n = 60
	for i := range n {
		if err := dbs[i%3].Update(ctx, func(tx *store.Tx) error {
			return tx.AppendAudit(&store.AuditEvent{Type: "test", Actor: fmt.Sprint(i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, err := notify.Cursor(ctx, dbs[0], "siem")
		if err == nil && cur == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor %d (%v) 30 s after %d events", cur, err, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for seq := uint64(1); seq <= n; seq++ {
		if sink.seqs[seq] != 1 {
			t.Fatalf("event %d delivered %d times by 3 replicas, want once", seq, sink.seqs[seq])
		}
	}
}
