package identity

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

// Hashes made by other implementations, so VerifyPassword is checked
// against more than its own HashPassword:
//
//	argon2id: python3 ctypes → libargon2.so.1 argon2id_hash_encoded(t=2, m=19456, p=1,
//	          pwd="correct horse battery staple", salt="0123456789abcdef", hashlen=32)
//	bcrypt:   python3 -c 'import crypt; print(crypt.crypt("correct horse battery staple", "$2b$04$abcdefghijklmnopqrstuu"))'
//	          (libxcrypt; the same with $2a$ and $2y$; cost 4 keeps the race-detector run short)
const (
	fixturePassword = "correct horse battery staple"
	libargon2Hash   = "$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$gy5SuVm5Z7Vw7keB9se9p87QGcomaseB/S2U1OhTsM0"
	bcrypt2aHash    = "$2a$04$abcdefghijklmnopqrstuu7EJV7kdjBBQxyb0HjTh9KS7.Lah/6CG"
	bcrypt2bHash    = "$2b$04$abcdefghijklmnopqrstuu7EJV7kdjBBQxyb0HjTh9KS7.Lah/6CG"
	bcrypt2yHash    = "$2y$04$abcdefghijklmnopqrstuu7EJV7kdjBBQxyb0HjTh9KS7.Lah/6CG"
)

func TestHashPasswordFormat(t *testing.T) {
	h, err := HashPassword("s3cret", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=47104,t=1,p=1$") {
		t.Errorf("hash %q: want argon2id PHC with m=47104,t=1,p=1", h)
	}
	if strings.Contains(h, "s3cret") {
		t.Error("hash contains the password")
	}
	parsed, err := parseArgon2(h)
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed.salt) != 16 || len(parsed.key) != 32 {
		t.Errorf("salt %d bytes, key %d bytes; want 16 and 32", len(parsed.salt), len(parsed.key))
	}
	// Two hashes of the same password differ (random salt).
	h2, err := HashPassword("s3cret", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if h == h2 {
		t.Error("two hashes of one password are equal: salt not random")
	}
	// The salt comes from the injected reader.
	zero, err := HashPassword("s3cret", bytes.NewReader(make([]byte, 16)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(zero, "$AAAAAAAAAAAAAAAAAAAAAA$") {
		t.Errorf("hash with all-zero salt = %q", zero)
	}
	if _, err := HashPassword("s3cret", bytes.NewReader(nil)); err == nil {
		t.Error("HashPassword with an empty reader: want error")
	}
}

func TestVerifyPassword(t *testing.T) {
	own, err := HashPassword(fixturePassword, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		encoded  string
		password string
		want     bool
		wantErr  error
	}{
		{"own argon2id", own, fixturePassword, true, nil},
		{"own argon2id, wrong password", own, fixturePassword + "!", false, nil},
		{"own argon2id, empty password", own, "", false, nil},
		{"libargon2 argon2id", libargon2Hash, fixturePassword, true, nil},
		{"libargon2 argon2id, wrong password", libargon2Hash, "Correct horse battery staple", false, nil},
		{"bcrypt 2a", bcrypt2aHash, fixturePassword, true, nil},
		{"bcrypt 2b", bcrypt2bHash, fixturePassword, true, nil},
		{"bcrypt 2y", bcrypt2yHash, fixturePassword, true, nil},
		{"bcrypt 2b, wrong password", bcrypt2bHash, "correct horse battery stapler", false, nil},
		{"bcrypt truncated", bcrypt2bHash[:30], fixturePassword, false, ErrMalformedHash},
		{"argon2i is not argon2id", "$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG", "anything", false, ErrUnsupportedHash},
		{"plain text", "correct horse battery staple", fixturePassword, false, ErrUnsupportedHash},
		{"empty", "", "", false, ErrUnsupportedHash},
		{"argon2id version 16", strings.Replace(libargon2Hash, "v=19", "v=16", 1), fixturePassword, false, ErrMalformedHash},
		{"argon2id memory above bound", strings.Replace(libargon2Hash, "m=19456", "m=4194304", 1), fixturePassword, false, ErrMalformedHash},
		{"argon2id zero time", strings.Replace(libargon2Hash, "t=2", "t=0", 1), fixturePassword, false, ErrMalformedHash},
		{"argon2id short hash", libargon2Hash[:len(libargon2Hash)-30], fixturePassword, false, ErrMalformedHash},
		{"argon2id params reordered", strings.Replace(libargon2Hash, "m=19456,t=2", "t=2,m=19456", 1), fixturePassword, false, ErrMalformedHash},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VerifyPassword(tt.encoded, tt.password)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("VerifyPassword = %v, want %v", got, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), tt.password) && tt.password != "" {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

// TestDummyVerifyCostsAVerify: DummyVerify (unknown users, throttled
// attempts) runs the same argon2id work as a real verify, so the answer's
// timing does not tell which names exist. Checked by parameters, not by a
// stopwatch: the dummy hash parses to exactly what HashPassword makes.
func TestDummyVerifyCostsAVerify(t *testing.T) {
	h, err := HashPassword("pw", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	real, err := parseArgon2(h)
	if err != nil {
		t.Fatal(err)
	}
	dummy, err := parseArgon2(dummyHash)
	if err != nil {
		t.Fatalf("dummy hash does not parse: %v", err)
	}
	if dummy.memory != real.memory || dummy.time != real.time || dummy.threads != real.threads || len(dummy.key) != len(real.key) {
		t.Fatalf("dummy hash m=%d,t=%d,p=%d/%d bytes; HashPassword m=%d,t=%d,p=%d/%d bytes",
			dummy.memory, dummy.time, dummy.threads, len(dummy.key), real.memory, real.time, real.threads, len(real.key))
	}
	if ok, err := VerifyPassword(dummyHash, "pw"); ok || err != nil {
		t.Fatalf("the dummy hash verifies a password: %v %v", ok, err)
	}
}
