package identity

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzParseArgon2: the PHC parser never panics, accepts only in-bounds
// parameters, and what it accepts encodes back to the same string (one
// canonical form, so a stored hash cannot be altered without notice).
func FuzzParseArgon2(f *testing.F) {
	f.Add(libargon2Hash)
	f.Add("$argon2id$v=19$m=47104,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("$argon2id$v=19$m=08,t=1,p=1$c29tZXNhbHQ$c29tZXNhbHRzb21lc2FsdA")
	f.Add("$argon2id$v=19$m=1,t=1,p=1$$")
	f.Add("$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseArgon2(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("error %v is not ErrMalformedHash", err)
			}
			return
		}
		if h.memory > maxArgonMemoryKiB || h.time > maxArgonTime || h.threads > maxArgonThreads || h.memory < 8*uint32(h.threads) {
			t.Fatalf("accepted out-of-bounds parameters %+v", h)
		}
		if got := h.String(); got != s {
			t.Fatalf("round trip: %q → %q", s, got)
		}
	})
}

// FuzzStringsClaim: any JSON value for a groups or amr claim gives either a
// list of exactly the strings in it or ErrMalformedToken.
func FuzzStringsClaim(f *testing.F) {
	for _, s := range []string{`null`, `"ops"`, `""`, `["a","b"]`, `[]`, `42`, `["a",1]`, `{"a":"b"}`, `[["a"]]`, `true`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, js string) {
		var v any
		if json.Unmarshal([]byte(js), &v) != nil {
			return
		}
		got, err := stringsClaim("groups", v)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error %v is not ErrMalformedToken", err)
			}
			return
		}
		switch v := v.(type) {
		case nil:
			if len(got) != 0 {
				t.Fatalf("null gave %q", got)
			}
		case string:
			if (v == "" && len(got) != 0) || (v != "" && (len(got) != 1 || got[0] != v)) {
				t.Fatalf("%q gave %q", v, got)
			}
		case []any:
			if len(got) != len(v) {
				t.Fatalf("%v gave %q", v, got)
			}
			for i := range v {
				if v[i] != got[i] {
					t.Fatalf("%v gave %q", v, got)
				}
			}
		default:
			t.Fatalf("%T accepted as %q", v, got)
		}
	})
}

// FuzzCheckTOTP: only the code of one of the three steps around now is ever
// accepted, and the step returned is that code's.
func FuzzCheckTOTP(f *testing.F) {
	const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	f.Add("123456", int64(1795239146), int64(0))
	f.Add("00000", int64(0), int64(0))
	f.Add("１２３４５６", int64(59), int64(-1))
	f.Add("705735", int64(1795239146), int64(59841304))
	f.Fuzz(func(t *testing.T, code string, unix, lastStep int64) {
		if unix < 0 || unix > 1<<40 {
			return
		}
		now := time.Unix(unix, 0)
		step, err := CheckTOTP(secret, code, now, lastStep)
		if err != nil {
			if !errors.Is(err, ErrBadOTP) && !errors.Is(err, ErrOTPReplayed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		cur := unix / 30
		if step < cur-1 || step > cur+1 || step <= lastStep {
			t.Fatalf("accepted step %d at step %d (last %d)", step, cur, lastStep)
		}
		if strings.Trim(code, "0123456789") != "" || len(code) != 6 {
			t.Fatalf("accepted %q", code)
		}
	})
}

// FuzzHeaderAlg: the header reader never panics and only returns an alg
// that the header really names.
func FuzzHeaderAlg(f *testing.F) {
	for _, s := range []string{"eyJhbGciOiJub25lIn0.e30.", "a.b.c", "", "..", "eyJhbGciOjF9.e30.x", "eyJhbGciOiJFUzI1NiJ9.e30.sig.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		alg, err := headerAlg(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error %v is not ErrMalformedToken", err)
			}
			return
		}
		if alg == "" || strings.Count(raw, ".") != 2 {
			t.Fatalf("accepted %q with alg %q", raw, alg)
		}
	})
}
