package ca

import (
	"context"
	"errors"
	"fmt"

	"github.com/sshward/sshward/ca/identity"
	"github.com/sshward/sshward/ca/store"
)

// ErrWorkloadReplayed is returned when a workload token's jti was already
// exchanged for a certificate (issue 12 §1). Kept here, with the workload
// exchange, so the parallel edits to errors.go stay apart.
var ErrWorkloadReplayed = errors.New("ca: workload token already used: fetch a fresh token from the CI platform")

// WorkloadTokenID is the used-token key of a workload token: the SHA-256 of
// its issuer and jti, so a jti is once per issuer, whatever the token bytes.
func WorkloadTokenID(w identity.Workload) string {
	return store.TokenID("workload\x00" + w.Issuer + "\x00" + w.JTI)
}

// UseWorkloadToken records in db that w's jti was used, until the token
// expires; a second use is ErrWorkloadReplayed. One store transaction, so of
// racing exchanges of one token exactly one wins, and a restart remembers.
func UseWorkloadToken(ctx context.Context, db *store.DB, w identity.Workload) error {
	err := db.Update(ctx, func(tx *store.Tx) error { return tx.UseToken(WorkloadTokenID(w), w.Expiry) })
	if errors.Is(err, store.ErrExists) {
		return ErrWorkloadReplayed
	}
	if err != nil {
		return fmt.Errorf("ca: record workload token use: %w", err)
	}
	return nil
}
