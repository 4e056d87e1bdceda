package api

import (
	"strconv"
	"strings"
)

// ExtBulkOutput carries a tier's bulk_output policy to the agent: how much
// of a session's binary output (the recording's side blob) is kept.
// "keep-mib=N" keeps the first N MiB and the length and sha256 of all of
// it; absent (or "all") keeps everything.
const ExtBulkOutput = "bulk-output@sshward"

// MaxBulkKeepMiB bounds keep_mib: 1 TiB, far above any recording.
const MaxBulkKeepMiB = 1 << 20

// BulkOutputValue is the ExtBulkOutput value for a cap of keepMiB (0: all).
func BulkOutputValue(keepMiB int) string {
	if keepMiB <= 0 {
		return "all"
	}
	return "keep-mib=" + strconv.Itoa(keepMiB)
}

// ParseBulkOutput reads an ExtBulkOutput value into the bytes kept (0:
// all). ok is false for anything else: the agent then keeps everything,
// the safe reading for evidence.
func ParseBulkOutput(v string) (keepBytes int64, ok bool) {
	if v == "all" {
		return 0, true
	}
	n, found := strings.CutPrefix(v, "keep-mib=")
	if !found || n == "" || n[0] == '+' || n[0] == '-' {
		return 0, false
	}
	mib, err := strconv.Atoi(n)
	if err != nil || mib < 1 || mib > MaxBulkKeepMiB {
		return 0, false
	}
	return int64(mib) << 20, true
}
