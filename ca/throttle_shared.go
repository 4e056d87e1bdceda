package ca

import (
	"context"
	"time"

	"github.com/sshward/sshward/ca/store"
)

// CA replicas on one shared store (etcd) must count failed logins
// together, or a guesser spreading tries over N replicas gets N times the
// allowance. There the throttle's counts live in the store (one
// transaction per failure, so concurrent failures through different
// replicas each count once); a CA on its own bbolt file keeps them in
// memory as before (throttle.go).

func (a *Authority) throttleLocked(ctx context.Context, user, addr string, now time.Time) bool {
	if !a.cfg.Store.Shared() {
		return a.throttle.locked(user, addr, now)
	}
	uk, ak := throttleKeys(user, addr)
	var u, ad store.LoginFailures
	err := a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		if u, err = tx.GetLoginFailures(uk); err != nil {
			return err
		}
		ad, err = tx.GetLoginFailures(ak)
		return err
	})
	if err != nil {
		// The login's own store reads fail the same way right after.
		a.cfg.Logger.Warn("login throttle: store read failed", "err", err)
		return false
	}
	t := a.throttle
	return now.Before(t.perUser.Until(u.Failures, u.Last)) || now.Before(t.perAddr.Until(ad.Failures, ad.Last))
}

func (a *Authority) throttleFail(ctx context.Context, user, addr string, now time.Time) {
	if !a.cfg.Store.Shared() {
		a.throttle.fail(user, addr, now)
		return
	}
	uk, ak := throttleKeys(user, addr)
	err := a.cfg.Store.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		for _, k := range []string{uk, ak} {
			if _, err := tx.AddLoginFailure(k, now, now.Add(throttleKeep)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		a.cfg.Logger.Warn("login throttle: failure not counted", "err", err)
	}
}

func (a *Authority) throttleSucceed(ctx context.Context, user, addr string) {
	if !a.cfg.Store.Shared() {
		a.throttle.succeed(user, addr)
		return
	}
	uk, _ := throttleKeys(user, addr)
	if err := a.cfg.Store.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error { return tx.ClearLoginFailures(uk) }); err != nil {
		a.cfg.Logger.Warn("login throttle: failures not cleared", "err", err)
	}
}

// throttleKeep is how long a shared failure count is kept after its last
// failure: longer than any lockout it causes (identity.Lockout caps it).
const throttleKeep = 24 * time.Hour
