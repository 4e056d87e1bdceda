package ca_test

import (
	"context"
	"testing"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

// TestTerminateSyncAcrossReplicas: a second CA on the same store (as
// replicas share an etcd cluster) hands its agents the order the first one
// signed, once, verifiable with the host CA key; a refused termination is
// never synced.
func TestTerminateSyncAcrossReplicas(t *testing.T) {
	w := catest.New(t, catest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := ca.New(ca.Config{Store: w.Store, Policy: w.Policy, UserCAs: w.UserCAs, HostCA: w.HostCA})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.RunTerminateSync(ctx, 10*time.Millisecond) }()
	w.AddUser(t, "audrey", "correct horse battery", []string{"auditors"}, false)
	w.AddUser(t, "eve", "correct horse battery", []string{"sre"}, false)
	req := api.TerminateRequest{Reason: " INC-5 ", Host: "web1", Tier: api.TierProduction, User: "alice"}
	eve, err := w.Authority.Authenticate(ctx, w.Login(t, "eve", "correct horse battery", ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Authority.Terminate(ctx, eve, "s-1", req, "127.0.0.1"); err == nil {
		t.Fatal("a non-auditor terminated a session")
	}
	audrey, err := w.Authority.Authenticate(ctx, w.Login(t, "audrey", "correct horse battery", ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Authority.Terminate(ctx, audrey, "s-2", req, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		orders, _, _ := b.TerminateOrdersSince(0, []string{api.TierProduction})
		if len(orders) == 1 {
			o := orders[0]
			if o.SessionID != "s-2" || o.Reason != "INC-5" || o.By != "audrey" {
				t.Fatalf("synced order %+v", o)
			}
			if err := o.Verify(w.HostCA.PublicKey(), "web1", time.Now()); err != nil {
				t.Fatalf("the synced order does not verify: %v", err)
			}
			break
		}
		if len(orders) > 1 || time.Now().After(deadline) {
			t.Fatalf("orders on the second replica: %+v", orders)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The signing replica does not get it twice from its own log.
	a := w.Authority
	go a.RunTerminateSync(ctx, 10*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	if orders, _, _ := a.TerminateOrdersSince(0, []string{api.TierProduction}); len(orders) != 1 {
		t.Fatalf("orders on the signing replica: %+v", orders)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
