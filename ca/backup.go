package ca

import (
	"context"
	"io"

	"github.com/sshward/sshward/ca/store"
)

// Backup writes a consistent snapshot of the CA store to w while the CA
// runs, after appending a "ca.backup" event to the audit log, so the
// snapshot holds the record of its own making. actor names who asked (the
// admin socket's caller, or the local operator).
func (a *Admin) Backup(ctx context.Context, actor string, w io.Writer) (int64, error) {
	if a.cfg.Store.Shared() { // etcd: refused before anything is audited
		return a.cfg.Store.WriteSnapshot(ctx, w)
	}
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		return a.appendAudit(tx, store.AuditEvent{Type: "ca.backup", Actor: actor})
	})
	if err != nil {
		return 0, err
	}
	return a.cfg.Store.WriteSnapshot(ctx, w)
}
