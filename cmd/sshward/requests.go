package main

import (
	"context"
	"fmt"
)

// cmdAccess runs request, requests, approve and deny.
func (e *env) cmdAccess(ctx context.Context, verb string, args []string) error {
	return fmt.Errorf("%s is not available yet", verb)
}
