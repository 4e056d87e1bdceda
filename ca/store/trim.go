package store

import "time"

// Mapped pages. bbolt reads the file through a shared read-only mmap, and
// every page a transaction touches stays mapped into the process: as the
// certificate and audit buckets grow, the CA's resident set grows with the
// file (about 1.2 KiB per issuance), although those pages are the kernel's
// page cache, clean, and shared with any reader of the file. The trimmer
// tells the kernel, at most once per trimEvery while commits happen, that
// the process no longer needs its mappings of them (madvise MADV_DONTNEED);
// the data stays in the page cache and a later read maps it again with a
// minor fault. It never changes what a transaction reads.
const trimEvery = time.Second

// trimLoop drops the mapped pages once at start (opening scanned the whole
// file to rebuild the freelist) and then each time the committer asks,
// until Close.
func (db *DB) trimLoop() {
	defer close(db.trimExited)
	db.dropMappedPages()
	for {
		select {
		case <-db.trimStop:
			return
		case <-db.trimKick:
			db.dropMappedPages()
		}
	}
}

// kickTrim asks the trimmer to run if trimEvery passed since it last was
// asked; called after each commit, under the commit token.
func (db *DB) kickTrim() {
	if db.trimKick == nil {
		return
	}
	now := time.Now().UnixNano()
	if now-db.lastTrim.Load() < int64(trimEvery) {
		return
	}
	db.lastTrim.Store(now)
	select {
	case db.trimKick <- struct{}{}:
	default:
	}
}
