package store

import (
	"fmt"
	"time"
)

// User is a local CA user (password + optional TOTP). PasswordHash and
// TOTPSecret are secrets: they are stored here (the file is 0600) but never
// appear in errors or logs.
type User struct {
	Name         string    `json:"name"`
	Groups       []string  `json:"groups,omitempty"`
	PasswordHash string    `json:"password_hash,omitempty"` // argon2id or bcrypt, PHC/modular form
	TOTPSecret   string    `json:"totp_secret,omitempty"`   // base32; empty when not enrolled
	TOTPLastStep int64     `json:"totp_last_step,omitzero"` // last accepted time step, to refuse replays
	Failures     int       `json:"failures,omitzero"`       // consecutive failed logins
	LastFailure  time.Time `json:"last_failure,omitzero"`
	LockedUntil  time.Time `json:"locked_until,omitzero"`
	// DisabledAt, when set, is when an administrator disabled the user:
	// no login, no certificate (sshward-ca users disable; enable clears it).
	DisabledAt time.Time `json:"disabled_at,omitzero"`
	CreatedAt  time.Time `json:"created_at,omitzero"` // set by PutUser when zero
	UpdatedAt  time.Time `json:"updated_at,omitzero"` // set by every PutUser
}

// PutUser creates or replaces the user u.Name. It sets u.UpdatedAt to now
// and u.CreatedAt too when zero. To refuse an existing name, GetUser first
// in the same transaction.
func (tx *Tx) PutUser(u *User) error {
	if err := checkName("put user", "name", u.Name); err != nil {
		return err
	}
	b, err := tx.writeBucket("put user", bucketUsers)
	if err != nil {
		return err
	}
	now := tx.now()
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now
	}
	u.UpdatedAt = now
	if err := putJSON(b, []byte(u.Name), u); err != nil {
		return fmt.Errorf("store: put user %q: %w", u.Name, err)
	}
	return nil
}

// GetUser returns the user, or an error wrapping ErrNotFound.
func (tx *Tx) GetUser(name string) (*User, error) {
	u := new(User)
	found, err := getJSON(tx.bucket(bucketUsers), []byte(name), u)
	if err != nil {
		return nil, fmt.Errorf("store: get user %q: %w", name, err)
	}
	if !found {
		return nil, fmt.Errorf("store: get user %q: %w", name, ErrNotFound)
	}
	return u, nil
}

// DeleteUser removes the user, or returns an error wrapping ErrNotFound.
// Their sessions are left alone: call RevokeUserSessions in the same
// transaction.
func (tx *Tx) DeleteUser(name string) error {
	b, err := tx.writeBucket("delete user", bucketUsers)
	if err != nil {
		return err
	}
	if name == "" || b.Get([]byte(name)) == nil {
		return fmt.Errorf("store: delete user %q: %w", name, ErrNotFound)
	}
	if err := b.Delete([]byte(name)); err != nil {
		return fmt.Errorf("store: delete user %q: %w", name, err)
	}
	return nil
}

// ListUsers returns every user, sorted by name.
func (tx *Tx) ListUsers() ([]User, error) {
	var out []User
	err := forEachJSON(tx.bucket(bucketUsers), func(_ []byte, u *User) error {
		out = append(out, *u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	return out, nil
}
