package main

import (
	"os"
	"runtime/debug"
)

// The CA's memory budget (issue 10: peak RSS under load ≤ 128 MiB).
// Issuance allocates small short-lived objects at a high rate and keeps
// little alive (sessions, the store's pages are mmapped), so the cheapest
// GC that honours a budget is a soft memory limit with a high GOGC: the
// collector then runs only when the heap nears the limit. The limit is
// below the budget to leave room for stacks, the runtime and the mmapped
// store pages that count in RSS. A password login allocates argon2id's
// 46 MiB once and drops it.
const (
	serveMemoryLimit = 100 << 20
	serveGCPercent   = 800
)

// setMemoryBudget applies the defaults unless the operator set GOGC or
// GOMEMLIMIT, which win.
func setMemoryBudget() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(serveMemoryLimit)
	}
}
