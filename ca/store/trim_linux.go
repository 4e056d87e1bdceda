package store

import (
	"golang.org/x/sys/unix"

	bolt "go.etcd.io/bbolt"
)

// dropMappedPages madvises the mapped file (up to the size this read
// transaction sees, which bbolt keeps mapped) MADV_DONTNEED. The read
// transaction holds bbolt's mmap lock, so the mapping cannot move meanwhile.
func (db *DB) dropMappedPages() {
	_ = db.bolt.View(func(btx *bolt.Tx) error {
		data := db.bolt.Info().Data
		if data == 0 || btx.Size() <= 0 {
			return nil
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, data, uintptr(btx.Size()), unix.MADV_DONTNEED); errno != 0 {
			db.log.Debug("store: madvise of mapped pages failed", "err", errno.Error())
		}
		db.trims.Add(1)
		return nil
	})
}
