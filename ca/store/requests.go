package store

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// bucketRequests holds access requests: id → JSON AccessRequest. It is
// listed in allBuckets (db.go) so Open creates it.
var bucketRequests = []byte("requests")

// AccessRequest is one access request (DESIGN.md "Access requests"). The
// CA owns its state machine; the store keeps the record and validates only
// what keeps the file sound.
type AccessRequest struct {
	ID              string   `json:"id"`
	State           string   `json:"state"`
	Requester       string   `json:"requester"`
	RequesterGroups []string `json:"requester_groups,omitempty"`
	Tier            string   `json:"tier"`
	Reason          string   `json:"reason"`
	Principals      []string `json:"principals,omitempty"`
	Hosts           []string `json:"hosts,omitempty"` // target hosts; none: any host of the tier
	// Labels: host labels the certificate is limited to (all of them).
	Labels          map[string]string `json:"labels,omitempty"`
	TTL             time.Duration     `json:"ttl"`
	CreatedAt       time.Time         `json:"created_at"` // set by PutRequest when zero
	ExpiresAt       time.Time         `json:"expires_at"`
	ApprovalsNeeded int               `json:"approvals_needed"`
	Approvals       []RequestVote     `json:"approvals,omitempty"`
	Denial          *RequestVote      `json:"denial,omitempty"`
	ClientAddr      string            `json:"client_addr,omitzero"`
	IssuedSerial    uint64            `json:"issued_serial,omitzero"`
	IssuedAt        time.Time         `json:"issued_at,omitzero"`
	UsedAt          time.Time         `json:"used_at,omitzero"`
	UsedOn          string            `json:"used_on,omitzero"`    // host that reported the use
	SessionID       string            `json:"session_id,omitzero"` // recording of that session
}

// RequestVote is an approval or a denial.
type RequestVote struct {
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitzero"`
}

// RequestFilter selects requests for ListRequests. Zero fields match all.
type RequestFilter struct {
	Requester string
	Tier      string
	States    []string // any of these states
	// Limit caps the result (newest first); <= 0 means no cap.
	Limit int
}

func (f *RequestFilter) match(r *AccessRequest) bool {
	switch {
	case f.Requester != "" && r.Requester != f.Requester,
		f.Tier != "" && r.Tier != f.Tier,
		len(f.States) > 0 && !slices.Contains(f.States, r.State):
		return false
	}
	return true
}

// PutRequest creates or replaces the request with r.ID. CreatedAt is set to
// now when zero.
func (tx *Tx) PutRequest(r *AccessRequest) error {
	const op = "put request"
	if err := checkName(op, "id", r.ID); err != nil {
		return err
	}
	for _, f := range [...]struct{ name, v string }{{"requester", r.Requester}, {"tier", r.Tier}, {"state", r.State}} {
		if err := checkName(op, f.name, f.v); err != nil {
			return err
		}
	}
	b, err := tx.writeBucket(op, bucketRequests)
	if err != nil {
		return err
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = tx.now()
	}
	if err := putJSON(b, []byte(r.ID), r); err != nil {
		return fmt.Errorf("store: %s %s: %w", op, r.ID, err)
	}
	return nil
}

// GetRequest returns the request with this id, or an error wrapping
// ErrNotFound.
func (tx *Tx) GetRequest(id string) (*AccessRequest, error) {
	const op = "get request"
	if err := checkName(op, "id", id); err != nil {
		return nil, err
	}
	r := new(AccessRequest)
	found, err := getJSON(tx.bucket(bucketRequests), []byte(id), r)
	if err != nil {
		return nil, fmt.Errorf("store: %s %s: %w", op, id, err)
	}
	if !found {
		return nil, fmt.Errorf("store: %s %s: %w", op, id, ErrNotFound)
	}
	return r, nil
}

// ListRequests returns the requests that match f, newest first (ties by
// id). It scans every request: access requests are rare by design.
func (tx *Tx) ListRequests(f RequestFilter) ([]AccessRequest, error) {
	var out []AccessRequest
	err := forEachJSON(tx.bucket(bucketRequests), func(_ []byte, r *AccessRequest) error {
		if f.match(r) {
			out = append(out, *r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list requests: %w", err)
	}
	slices.SortFunc(out, func(a, b AccessRequest) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}
