package main

import (
	"context"
	"fmt"
)

// cmdPlayback runs sessions, play and export against the playback server.
func (e *env) cmdPlayback(ctx context.Context, verb string, args []string) error {
	return fmt.Errorf("%s is not available yet", verb)
}
