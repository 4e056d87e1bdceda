package ca

import (
	"context"
	"fmt"
	"time"
)

// Ready reports whether the CA can issue now: its store answers (within a
// second) and it holds a signing key for every tier and for hosts. The
// error says which part is missing, never a secret; GET /readyz answers
// 503 with it, for load balancers and orchestrators.
func (a *Authority) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := a.cfg.Store.AuditHeadSeq(ctx); err != nil {
		return fmt.Errorf("store not answering: %w", err)
	}
	if err := a.keySyncErr(); err != nil {
		return fmt.Errorf("the CA keys in the shared store cannot be used: %w", err)
	}
	if a.cfg.HostCA == nil {
		return fmt.Errorf("no host CA key")
	}
	for _, tier := range a.cfg.Policy.TierNames() {
		if a.userCA(tier) == nil {
			return fmt.Errorf("no user CA key for tier %s", tier)
		}
	}
	return nil
}
