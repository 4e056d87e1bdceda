package identity

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Argon2id parameters for new hashes. 46 MiB, one pass, one lane is the
// first of OWASP's equivalent argon2id settings (Password Storage Cheat
// Sheet); it costs about 35 ms per verify on the project's 2-core machines,
// inside the 20-50 ms budget, and keeps one login to one core.
const (
	argonMemoryKiB = 46 * 1024
	argonTime      = 1
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Bounds on parameters read from a stored hash, so that a corrupt or hostile
// record cannot make one verify allocate gigabytes or run for minutes.
const (
	maxArgonMemoryKiB = 1 << 20 // 1 GiB
	maxArgonTime      = 16
	maxArgonThreads   = 16
	minArgonSaltLen   = 8
	maxArgonSaltLen   = 64
	minArgonKeyLen    = 16
	maxArgonKeyLen    = 64
)

// phcB64 is the PHC string format's base64: standard alphabet, no padding
// (https://github.com/P-H-C/phc-string-format).
var phcB64 = base64.RawStdEncoding

// argon2Hash is a parsed $argon2id$ PHC string.
type argon2Hash struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// HashPassword hashes password with argon2id and a 16-byte salt read from
// rand, and returns it in PHC string format:
//
//	$argon2id$v=19$m=47104,t=1,p=1$<salt>$<hash>
func HashPassword(password string, rand io.Reader) (string, error) {
	if rand == nil {
		return "", errors.New("identity: hash password: nil rand")
	}
	salt := make([]byte, argonSaltLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return "", fmt.Errorf("identity: hash password: read salt: %w", err)
	}
	h := argon2Hash{memory: argonMemoryKiB, time: argonTime, threads: argonThreads, salt: salt}
	h.key = argon2.IDKey([]byte(password), salt, h.time, h.memory, h.threads, argonKeyLen)
	return h.String(), nil
}

// VerifyPassword reports whether password matches encoded, an argon2id PHC
// string or a bcrypt hash ($2a$, $2b$, $2y$; for users imported from other
// systems). A mismatch is (false, nil); an error means the stored hash itself
// is unusable.
func VerifyPassword(encoded, password string) (bool, error) {
	switch {
	case strings.HasPrefix(encoded, "$argon2id$"):
		h, err := parseArgon2(encoded)
		if err != nil {
			return false, err
		}
		got := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
		return subtle.ConstantTimeCompare(got, h.key) == 1, nil
	case strings.HasPrefix(encoded, "$2a$"), strings.HasPrefix(encoded, "$2b$"), strings.HasPrefix(encoded, "$2y$"):
		// bcrypt compares in constant time itself.
		err := bcrypt.CompareHashAndPassword([]byte(encoded), []byte(password))
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
			return false, nil
		default:
			return false, fmt.Errorf("%w: bcrypt: %v", ErrMalformedHash, err)
		}
	default:
		return false, ErrUnsupportedHash
	}
}

// dummyHash is an argon2id hash made with the current parameters (and a
// fixed salt: it only has to cost what a real verify costs).
var dummyHash = argon2Hash{memory: argonMemoryKiB, time: argonTime, threads: argonThreads,
	salt: make([]byte, argonSaltLen), key: make([]byte, argonKeyLen)}.String()

// DummyVerify spends the time of one VerifyPassword against a current hash
// and throws the result away. Call it when the user does not exist (or may
// not try now), so that response time does not tell which user names are
// enrolled. It runs VerifyPassword itself on a hash with the parameters
// HashPassword uses, so the two cannot drift apart.
func DummyVerify(password string) {
	_, _ = VerifyPassword(dummyHash, password)
}

// String encodes h in PHC string format.
func (h argon2Hash) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.memory, h.time, h.threads, phcB64.EncodeToString(h.salt), phcB64.EncodeToString(h.key))
}

// parseArgon2 parses an $argon2id$ PHC string. The version field is
// required and must be 19 (0x13), the only version x/crypto implements.
func parseArgon2(s string) (argon2Hash, error) {
	var h argon2Hash
	fields := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(fields) != 6 || fields[0] != "" || fields[1] != "argon2id" {
		return h, fmt.Errorf("%w: want $argon2id$v=19$m=M,t=T,p=P$salt$hash", ErrMalformedHash)
	}
	if fields[2] != "v="+strconv.Itoa(argon2.Version) {
		return h, fmt.Errorf("%w: unsupported argon2 version %q", ErrMalformedHash, fields[2])
	}
	params := strings.Split(fields[3], ",")
	if len(params) != 3 {
		return h, fmt.Errorf("%w: want parameters m,t,p", ErrMalformedHash)
	}
	m, err1 := phcParam(params[0], "m", maxArgonMemoryKiB)
	t, err2 := phcParam(params[1], "t", maxArgonTime)
	p, err3 := phcParam(params[2], "p", maxArgonThreads)
	if err := errors.Join(err1, err2, err3); err != nil {
		return h, err
	}
	// argon2 needs at least 8 KiB per lane.
	if m < 8*p {
		return h, fmt.Errorf("%w: m=%d below 8*p", ErrMalformedHash, m)
	}
	salt, err := phcB64.Strict().DecodeString(fields[4])
	if err != nil || len(salt) < minArgonSaltLen || len(salt) > maxArgonSaltLen {
		return h, fmt.Errorf("%w: bad salt", ErrMalformedHash)
	}
	key, err := phcB64.Strict().DecodeString(fields[5])
	if err != nil || len(key) < minArgonKeyLen || len(key) > maxArgonKeyLen {
		return h, fmt.Errorf("%w: bad hash", ErrMalformedHash)
	}
	h.memory, h.time, h.threads, h.salt, h.key = m, t, uint8(p), salt, key
	return h, nil
}

// phcParam parses "name=decimal" with 1 <= value <= max.
func phcParam(s, name string, max uint32) (uint32, error) {
	v, ok := strings.CutPrefix(s, name+"=")
	if !ok {
		return 0, fmt.Errorf("%w: want parameter %s", ErrMalformedHash, name)
	}
	// Canonical decimal only: no sign, no leading zeros.
	if v == "" || (len(v) > 1 && v[0] == '0') || strings.TrimLeft(v, "0123456789") != "" {
		return 0, fmt.Errorf("%w: bad parameter %s", ErrMalformedHash, name)
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n < 1 || n > uint64(max) {
		return 0, fmt.Errorf("%w: parameter %s out of range", ErrMalformedHash, name)
	}
	return uint32(n), nil
}
