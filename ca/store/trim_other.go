//go:build !linux

package store

// dropMappedPages is Linux-only (madvise); elsewhere mapped pages stay.
func (db *DB) dropMappedPages() { db.trims.Add(1) }
