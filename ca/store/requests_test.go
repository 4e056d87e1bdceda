package store_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

func TestRequestsRoundTripAndList(t *testing.T) {
	db := storetest.MustOpenWith(t, store.Options{Now: fixedNow})
	reqs := []store.AccessRequest{
		{ID: "REQ-AAAA0001", State: "pending", Requester: "olivia", Tier: "break-glass", Reason: "INC-1", TTL: 10 * time.Minute,
			CreatedAt: t0.Add(-3 * time.Minute), ExpiresAt: t0.Add(27 * time.Minute), ApprovalsNeeded: 2,
			Approvals: []store.RequestVote{{By: "ian", At: t0, Reason: "ok"}}},
		{ID: "REQ-AAAA0002", State: "denied", Requester: "olivia", Tier: "break-glass", Reason: "INC-2",
			CreatedAt: t0.Add(-2 * time.Minute), Denial: &store.RequestVote{By: "ivy", At: t0, Reason: "no"}},
		{ID: "REQ-AAAA0003", State: "issued", Requester: "otto", Tier: "writes", Reason: "deploy", IssuedSerial: 42,
			CreatedAt: t0.Add(-1 * time.Minute)},
		{ID: "REQ-AAAA0004", State: "pending", Requester: "otto", Tier: "break-glass", Reason: "INC-4"}, // CreatedAt from the store clock
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		for i := range reqs {
			r := reqs[i]
			if err := tx.PutRequest(&r); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, db, func(tx *store.Tx) error {
		got, err := tx.GetRequest("REQ-AAAA0001")
		if err != nil {
			t.Fatal(err)
		}
		if got.Reason != "INC-1" || got.TTL != 10*time.Minute || len(got.Approvals) != 1 || got.Approvals[0].By != "ian" || !got.ExpiresAt.Equal(reqs[0].ExpiresAt) {
			t.Errorf("round trip: %+v", got)
		}
		if got, _ := tx.GetRequest("REQ-AAAA0004"); !got.CreatedAt.Equal(t0) {
			t.Errorf("CreatedAt not stamped: %v", got.CreatedAt)
		}
		if _, err := tx.GetRequest("REQ-NOPE0000"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing request: %v", err)
		}
		return nil
	})
	tests := []struct {
		name string
		f    store.RequestFilter
		want []string
	}{
		{"all newest first", store.RequestFilter{}, []string{"REQ-AAAA0004", "REQ-AAAA0003", "REQ-AAAA0002", "REQ-AAAA0001"}},
		{"by requester", store.RequestFilter{Requester: "olivia"}, []string{"REQ-AAAA0002", "REQ-AAAA0001"}},
		{"by tier and state", store.RequestFilter{Tier: "break-glass", States: []string{"pending"}}, []string{"REQ-AAAA0004", "REQ-AAAA0001"}},
		{"several states", store.RequestFilter{States: []string{"denied", "issued"}}, []string{"REQ-AAAA0003", "REQ-AAAA0002"}},
		{"limit", store.RequestFilter{Limit: 1}, []string{"REQ-AAAA0004"}},
		{"no match", store.RequestFilter{Requester: "nobody"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			mustView(t, db, func(tx *store.Tx) error {
				got, err := tx.ListRequests(tc.f)
				for _, r := range got {
					ids = append(ids, r.ID)
				}
				return err
			})
			if !slices.Equal(ids, tc.want) {
				t.Errorf("got %v, want %v", ids, tc.want)
			}
		})
	}
}

func TestPutRequestValidates(t *testing.T) {
	db := storetest.MustOpen(t)
	ok := store.AccessRequest{ID: "REQ-1", State: "pending", Requester: "a", Tier: "t"}
	tests := []struct {
		name string
		edit func(*store.AccessRequest)
	}{
		{"no id", func(r *store.AccessRequest) { r.ID = "" }},
		{"no requester", func(r *store.AccessRequest) { r.Requester = "" }},
		{"no tier", func(r *store.AccessRequest) { r.Tier = "" }},
		{"no state", func(r *store.AccessRequest) { r.State = "" }},
		{"huge id", func(r *store.AccessRequest) { r.ID = string(make([]byte, 2000)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.edit(&r)
			err := db.Update(t.Context(), func(tx *store.Tx) error { return tx.PutRequest(&r) })
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("want ErrInvalid, got %v", err)
			}
		})
	}
	// Replacing a request (a state change) is a plain put.
	mustUpdate(t, db, func(tx *store.Tx) error { r := ok; return tx.PutRequest(&r) })
	mustUpdate(t, db, func(tx *store.Tx) error { r := ok; r.State = "approved"; return tx.PutRequest(&r) })
	mustView(t, db, func(tx *store.Tx) error {
		if r, err := tx.GetRequest("REQ-1"); err != nil || r.State != "approved" {
			t.Fatalf("replace: %v %+v", err, r)
		}
		return nil
	})
	// A read-only transaction cannot write.
	err := db.View(t.Context(), func(tx *store.Tx) error { r := ok; return tx.PutRequest(&r) })
	if !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("put in View: %v", err)
	}
}
