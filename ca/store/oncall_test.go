package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

// TestOnCallGrants: the records the CA's shift-end loop starts from
// survive reopening (here and, through TestSuiteOnEtcd, on etcd), are
// listed by serial, updated in place and forgotten on request.
func TestOnCallGrants(t *testing.T) {
	db := storetest.MustOpen(t)
	ctx := context.Background()
	end := time.Date(2030, 1, 1, 18, 0, 0, 0, time.UTC) // stored and read back, never compared with a clock
	err := db.Update(ctx, func(tx *store.Tx) error {
		for _, s := range []uint64{30, 10, 20} {
			if err := tx.PutOnCallGrant(&store.OnCallGrant{Serial: s, KeyID: "k", Tier: "oncall-prod", User: "alice",
				Rotation: "sre", ShiftStart: end.Add(-8 * time.Hour), ShiftEnd: end, ValidBefore: end}); err != nil {
				return err
			}
		}
		if err := tx.PutOnCallGrant(&store.OnCallGrant{Serial: 0, Tier: "t", User: "u"}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("serial 0 = %v", err)
		}
		if err := tx.PutOnCallGrant(&store.OnCallGrant{Serial: 1, Tier: "t"}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("no user = %v", err)
		}
		return tx.AddRevocation(&store.Revocation{Tier: "oncall-prod", Serial: 20, Reason: "shift ended", Notice: "your shift ended"})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(tx *store.Tx) error {
		g, err := tx.OnCallGrants()
		if err != nil {
			return err
		}
		if len(g) != 3 || g[0].Serial != 10 || g[2].Serial != 30 || !g[1].ShiftEnd.Equal(end) || g[1].User != "alice" {
			t.Fatalf("grants = %+v", g)
		}
		if !tx.IsRevoked("oncall-prod", 20) || tx.IsRevoked("oncall-prod", 10) || tx.IsRevoked("other", 20) {
			t.Fatal("IsRevoked")
		}
		g[1].Notice = "your shift ended"
		if err := tx.PutOnCallGrant(&g[1]); err != nil {
			return err
		}
		return tx.DeleteOnCallGrant(30)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(ctx, func(tx *store.Tx) error {
		g, err := tx.OnCallGrants()
		if err != nil {
			return err
		}
		if len(g) != 2 || g[1].Serial != 20 || g[1].Notice != "your shift ended" {
			t.Fatalf("after update and delete: %+v", g)
		}
		revs, _, _, err := tx.RevocationsSince(0, nil, 0)
		if err != nil || len(revs) != 1 || revs[0].Notice != "your shift ended" {
			t.Fatalf("revocation log = %+v, %v", revs, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
