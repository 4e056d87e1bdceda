package ca_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/store"
)

// TestTOTPSecretsEncryptedAtRest is the thief with a copy of the CA store
// file (a backup, a disk image): no TOTP secret is in it in clear, and a
// sealed secret moved to another user does not open. A secret added
// offline without the passphrase is sealed at the next CA start.
func TestTOTPSecretsEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	w := catest.New(t, catest.Options{Passphrase: []byte("correct horse battery"), Now: func() time.Time { return now }})
	secret := w.AddUser(t, "alice", pw, []string{"sre"}, true)
	mallorySecret := w.AddUser(t, "mallory", pw, []string{"sre"}, true)

	raw, err := os.ReadFile(w.Store.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{secret, mallorySecret} {
		if bytes.Contains(raw, []byte(s)) || bytes.Contains(raw, []byte(strings.ToLower(s))) {
			t.Fatal("a TOTP secret is in the store file in clear")
		}
	}
	// The user still logs in with the code.
	if _, err := w.Authority.Login(ctx, api.LoginRequest{User: "alice", Password: pw, OTP: catest.Code(t, secret, now)}, "192.0.2.1"); err != nil {
		t.Fatalf("login with an encrypted TOTP secret: %v", err)
	}
	// Moving mallory's sealed secret onto alice's record (someone with write
	// access to the file) does not give alice mallory's codes.
	err = w.Store.Update(ctx, func(tx *store.Tx) error {
		m, err := tx.GetUser("mallory")
		if err != nil {
			return err
		}
		a, err := tx.GetUser("alice")
		if err != nil {
			return err
		}
		a.TOTPSecret, a.TOTPLastStep = m.TOTPSecret, 0
		return tx.PutUser(a)
	})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if _, err := w.Authority.Login(ctx, api.LoginRequest{User: "alice", Password: pw, OTP: catest.Code(t, mallorySecret, now)}, "192.0.2.1"); err == nil {
		t.Fatal("a sealed secret moved to another user opened")
	}

	// Offline without the passphrase: stored in clear, and said so; the
	// next start with the passphrase seals it.
	db := w.Store
	pol := w.Policy
	adm, err := ca.NewAdmin(ca.AdminConfig{Store: db, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	res, err := adm.AddUser(ctx, ca.AddUserRequest{Name: "bob", Password: pw, Groups: []string{"sre"}, TOTP: true})
	if err != nil || !res.TOTPStoredInClear {
		t.Fatalf("offline add: %+v %v", res, err)
	}
	stored := func() string {
		var u *store.User
		db.View(ctx, func(tx *store.Tx) error { u, err = tx.GetUser("bob"); return err })
		return u.TOTPSecret
	}
	if stored() != res.TOTPSecret {
		t.Fatal("offline secret not stored as given")
	}
	box, err := ca.NewSecretBox(ctx, db, []byte("correct horse battery"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.New(ca.Config{Store: db, Policy: pol, UserCAs: w.UserCAs, HostCA: w.HostCA, Secrets: box, Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	if s := stored(); s == res.TOTPSecret || !strings.HasPrefix(s, "enc1:") {
		t.Fatalf("the next start did not seal the offline secret: %q", s)
	}
}
