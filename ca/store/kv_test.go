package store_test

import (
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

// TestTxSeesItsOwnWrites: inside one Update (one group-commit batch),
// point reads and cursors see what the transaction wrote and deleted
// before them, on either engine (the etcd engine buffers writes until
// commit and must merge them into every read).
func TestTxSeesItsOwnWrites(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	mustUpdate(t, db, func(tx *store.Tx) error {
		return tx.PutCert(&store.CertRecord{Serial: 5, KeyID: "k", Kind: store.CertKindUser})
	})
	mustUpdate(t, db, func(tx *store.Tx) error {
		for _, s := range []uint64{3, 9} {
			if err := tx.PutCert(&store.CertRecord{Serial: s, KeyID: "k", Kind: store.CertKindUser}); err != nil {
				return err
			}
		}
		if err := tx.PutCert(&store.CertRecord{Serial: 9, KeyID: "k", Kind: store.CertKindUser}); err == nil {
			t.Error("a serial written earlier in the same transaction was accepted again")
		}
		if m, err := tx.MaxSerial(); err != nil || m != 9 {
			t.Errorf("MaxSerial = %d, %v; want 9 (written in this transaction)", m, err)
		}
		recs, err := tx.CertsByKeyID("k")
		if err != nil || len(recs) != 3 || recs[0].Serial != 3 || recs[2].Serial != 9 {
			t.Errorf("CertsByKeyID = %+v, %v; want serials 3, 5, 9", recs, err)
		}
		list, err := tx.ListCerts(store.CertFilter{AfterSerial: 3})
		if err != nil || len(list) != 2 || list[0].Serial != 5 || list[1].Serial != 9 {
			t.Errorf("ListCerts after 3 = %+v, %v; want 5, 9", list, err)
		}
		// Claims written and then swept in the same transaction.
		for _, s := range []uint64{1, 2} {
			if _, err := tx.ClaimSerial(&store.Claim{Serial: s, Host: "h", SessionID: "x", ExpiresAt: t0}); err != nil {
				return err
			}
		}
		n, err := tx.DeleteExpiredClaims(t0.Add(time.Second), 10)
		if err != nil || n != 2 {
			t.Errorf("DeleteExpiredClaims = %d, %v; want the 2 written in this transaction", n, err)
		}
		if _, err := tx.GetClaim(1); err == nil {
			t.Error("a claim deleted in this transaction is still read")
		}
		return nil
	})
	mustView(t, db, func(tx *store.Tx) error {
		list, err := tx.ListCerts(store.CertFilter{})
		if err != nil || len(list) != 3 {
			t.Errorf("after commit: %d certs, %v; want 3", len(list), err)
		}
		if _, err := tx.GetClaim(2); err == nil {
			t.Error("after commit: a deleted claim is back")
		}
		return nil
	})
}
