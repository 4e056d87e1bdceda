package identity

import (
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
)

// TOTP settings: the RFC 6238 defaults every authenticator app understands.
const (
	totpPeriod = 30 // seconds per step
	totpDigits = otp.DigitsSix
	totpSkew   = 1 // steps accepted either side of now (RFC 6238 §5.2)
)

// NewTOTP makes a new 160-bit TOTP secret (RFC 4226 §4 recommends 160 bits)
// from crypto/rand and returns it base32-encoded without padding, with the
// otpauth:// URL that authenticator apps scan as a QR code.
func NewTOTP(issuer, account string) (secret string, url string, err error) {
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: account,
		Period:      totpPeriod,
		SecretSize:  20,
		Digits:      totpDigits,
		Algorithm:   otp.AlgorithmSHA1,
	})
	if err != nil {
		return "", "", fmt.Errorf("identity: new totp for %q: %w", account, err)
	}
	return key.Secret(), key.URL(), nil
}

// CheckTOTP checks a 6-digit code against secret at now, accepting the
// current 30 s step and one step either side for clock skew. lastStep is the
// step of the last code this user used (0 if none): a code of that step or
// an earlier one is refused with ErrOTPReplayed, so an observed code cannot
// be used again. On success it returns the step to store as the new lastStep.
func CheckTOTP(secret, code string, now time.Time, lastStep int64) (step int64, err error) {
	if len(code) != int(totpDigits) || !allDigits(code) {
		return 0, ErrBadOTP
	}
	current := now.Unix() / totpPeriod
	replayed := false
	// Oldest step first, so a code that (with odds 1e-6) matches two steps is
	// credited to the earliest one still unused.
	for s := current - totpSkew; s <= current+totpSkew; s++ {
		if s < 0 {
			continue
		}
		want, err := hotp.GenerateCodeCustom(secret, uint64(s), hotp.ValidateOpts{Digits: totpDigits, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			// Only a bad secret fails here; pquerna's error does not echo it.
			return 0, fmt.Errorf("identity: check totp: stored secret: %w", err)
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) != 1 {
			continue
		}
		if s <= lastStep {
			replayed = true
			continue
		}
		return s, nil
	}
	if replayed {
		return 0, ErrOTPReplayed
	}
	return 0, ErrBadOTP
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
