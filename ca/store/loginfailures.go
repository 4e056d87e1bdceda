package store

import (
	"encoding/json"
	"fmt"
	"time"
)

// bucketLoginFailures counts failed logins per throttle key (the CA's
// (name, address) and address keys), for CA replicas that must count
// together: TokenID(key) → JSON LoginFailures. Listed in allBuckets
// (db.go). A CA on one bbolt file counts in memory and leaves it empty.
var bucketLoginFailures = []byte("login_failures")

// LoginFailures is the failure count of one throttle key.
type LoginFailures struct {
	Failures int       `json:"failures"`
	Last     time.Time `json:"last"`
}

// GetLoginFailures returns the count of key (zero when none).
func (tx *Tx) GetLoginFailures(key string) (LoginFailures, error) {
	var f LoginFailures
	if _, err := getJSON(tx.bucket(bucketLoginFailures), []byte(TokenID(key)), &f); err != nil {
		return LoginFailures{}, fmt.Errorf("store: login failures: %w", err)
	}
	return f, nil
}

// AddLoginFailure counts one failure of key at now and returns the new
// count. The record is forgotten after keep (the longest lockout it can
// cause), so the bucket holds only keys that still lock something.
func (tx *Tx) AddLoginFailure(key string, now, keep time.Time) (LoginFailures, error) {
	const op = "add login failure"
	b, err := tx.writeBucket(op, bucketLoginFailures)
	if err != nil {
		return LoginFailures{}, err
	}
	k := []byte(TokenID(key))
	var f LoginFailures
	if raw := b.Get(k); raw != nil {
		if err := json.Unmarshal(raw, &f); err != nil {
			return LoginFailures{}, fmt.Errorf("store: %s: %w", op, err)
		}
	}
	f.Failures++
	f.Last = now
	if err := putJSONExpiring(b, k, &f, keep); err != nil {
		return LoginFailures{}, fmt.Errorf("store: %s: %w", op, err)
	}
	return f, nil
}

// ClearLoginFailures forgets key's failures (a successful login).
func (tx *Tx) ClearLoginFailures(key string) error {
	b, err := tx.writeBucket("clear login failures", bucketLoginFailures)
	if err != nil {
		return err
	}
	k := []byte(TokenID(key))
	if b.Get(k) == nil {
		return nil
	}
	if err := b.Delete(k); err != nil {
		return fmt.Errorf("store: clear login failures: %w", err)
	}
	return nil
}
