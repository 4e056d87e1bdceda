package ca_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

// TestLoginGivesNothingAway is the password guesser: every failure, whatever
// failed, gets the same code and text; the password of a TOTP user is never
// confirmed before the code; a guesser's failures from one address neither
// lock the real user out from theirs nor tell known names from unknown ones.
// The audit record keeps what really failed, and never the password.
func TestLoginGivesNothingAway(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	w := catest.New(t, catest.Options{Now: clock})
	secret := w.AddUser(t, "alice", pw, []string{"sre"}, true)
	w.AddUser(t, "bob", pw, []string{"engineers"}, false)
	ctx := context.Background()
	const attacker, victim = "192.0.2.66", "192.0.2.10"
	login := func(user, password, otp, from string) (*api.LoginResponse, error) {
		return w.Authority.Login(ctx, api.LoginRequest{User: user, Password: password, OTP: otp}, from)
	}
	answer := func(err error) string {
		var r *ca.Refusal
		if !errors.As(err, &r) {
			return "not a refusal: " + err.Error()
		}
		return r.Code + " " + r.Message
	}
	code := func(at time.Time) string { return catest.Code(t, secret, at) }

	// One guess each way, with a code: all alike.
	withCode := map[string]error{}
	for name, try := range map[string][3]string{
		"wrong password, right code": {"alice", "wrong-password", code(now)},
		"right password, wrong code": {"alice", pw, "000000"},
		"unknown user":               {"nobody", pw, "123456"},
		"no-TOTP user, bad password": {"bob", "wrong-password", "123456"},
	} {
		_, err := login(try[0], try[1], try[2], attacker)
		withCode[name] = err
	}
	var first string
	for name, err := range withCode {
		if err == nil {
			t.Fatalf("%s logged in", name)
		}
		if first == "" {
			first = answer(err)
		}
		if got := answer(err); got != first || !strings.HasPrefix(got, api.CodeUnauthenticated) {
			t.Errorf("%s answers %q; every failure must answer %q", name, got, first)
		}
	}
	// Without a code: a TOTP user's right and wrong passwords, and unknown
	// names, all answer "code required": the password is not confirmed.
	for name, try := range map[string][2]string{
		"TOTP user, right password":  {"alice", pw},
		"TOTP user, wrong password":  {"alice", "wrong-password"},
		"unknown user":               {"nobody2", "x"},
		"no-TOTP user, bad password": {"bob", "wrong-password"},
	} {
		_, err := login(try[0], try[1], "", attacker)
		if got := answer(err); !strings.HasPrefix(got, api.CodeOTPRequired) || !strings.Contains(got, "TOTP code is required") {
			t.Errorf("%s without a code answers %q", name, got)
		}
	}

	// The attacker keeps guessing alice's password from one address until
	// throttled; an unknown name is throttled the same way.
	for range 10 {
		now = now.Add(time.Second)
		login("alice", "guess", code(now), attacker)
		login("ghost", "guess", "123456", attacker)
	}
	now = now.Add(time.Second)
	_, errAlice := login("alice", pw, code(now), attacker)
	_, errGhost := login("ghost", pw, "123456", attacker)
	if errAlice == nil || answer(errAlice) != first || answer(errGhost) != first {
		t.Errorf("throttled: alice %v, unknown %v; want both %q", errAlice, errGhost, first)
	}
	// Alice, from her own address and at the same moment, is not locked
	// out by it.
	// (Failed logins never spend a TOTP window, so the code of this window
	// still works.)
	if _, err := login("alice", pw, code(now), victim); err != nil {
		t.Fatalf("the real user was locked out by someone else's guesses: %v", err)
	}

	// The audit keeps what failed (and not the password).
	evs, err := w.Store.Audit(ctx, storeFilter("login"))
	if err != nil {
		t.Fatal(err)
	}
	failures := map[string]int{}
	for _, e := range evs {
		if strings.Contains(e.Reason+strings.Join(mapValues(e.Details), " "), "wrong-password") {
			t.Fatalf("audit record holds the password: %+v", e)
		}
		if e.Outcome == "refused" {
			failures[e.Details["failure"]]++
		}
	}
	for _, want := range []string{"user or password is wrong", "user or password is wrong (unknown user)", "TOTP code is wrong or was already used", "a TOTP code is required", "too many failed logins from this address"} {
		if failures[want] == 0 {
			t.Errorf("no audit record says %q: %v", want, failures)
		}
	}
}
