package server

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
)

// checker is what every request type offers.
type checker interface{ Check() error }

func newTargets() []checker {
	return []checker{&api.LoginRequest{}, &api.CertRequest{}, &api.JoinRequest{}, &api.OIDCLoginRequest{}}
}

// FuzzDecodeRequests: the strict decoder never panics on any body, refuses
// with a 400-class wire error, and whatever it accepts re-encodes to a value
// that decodes to the same thing.
func FuzzDecodeRequests(f *testing.F) {
	for _, s := range []string{
		`{"user":"alice","password":"pw","otp":"123456"}`,
		`{"tier":"staging","public_key":"ssh-ed25519 AAAA","principals":["deploy"],"ttl":"15m"}`,
		`{"tier":"staging","ttl":900}`,
		`{"token":"swj_x","public_key":"ssh-ed25519 AAAA","tier":"production"}`,
		`{"id_token":"a.b.c"}`,
		`{"tier":`, `[]`, `null`, `{"ttl":"-5m"}`, `{"ttl":"99999999999h"}`, `{"tier":"a"}{"tier":"b"}`,
		`{"principals":[""]}`, "\x00", `{"user":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range newTargets() {
			err := decodeStrict(body, v)
			if err != nil {
				if err.Status != http.StatusBadRequest || !strings.HasPrefix(err.Message, "malformed JSON request") {
					t.Fatalf("decode error %d %q", err.Status, err.Message)
				}
				continue
			}
			_ = v.Check()
			again, merr := json.Marshal(v)
			if merr != nil {
				t.Fatalf("re-encode %T: %v", v, merr)
			}
			w := reflect.New(reflect.TypeOf(v).Elem()).Interface().(checker)
			if err := decodeStrict(again, w); err != nil {
				t.Fatalf("re-decode %T of %s: %v", v, again, err.Message)
			}
			if !reflect.DeepEqual(v, w) {
				t.Fatalf("round trip %T: %+v != %+v", v, v, w)
			}
		}
	})
}

func TestDecodeStrictTable(t *testing.T) {
	tests := []struct {
		name, body, want string
		ok               bool
	}{
		{"valid cert request", `{"tier":"staging","public_key":"k","ttl":"15m"}`, "", true},
		{"seconds ttl", `{"tier":"staging","public_key":"k","ttl":900}`, "", true},
		{"unknown field", `{"tier":"staging","root":true}`, "unknown field", false},
		{"wrong type", `{"tier":5}`, "wrong type", false},
		{"syntax", `{"tier":`, "malformed JSON request", false},
		{"empty", ``, "empty body", false},
		{"two objects", `{}{}`, "trailing data", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r api.CertRequest
			err := decodeStrict([]byte(tc.body), &r)
			if tc.ok {
				if err != nil {
					t.Fatalf("got %v", err.Message)
				}
				if time.Duration(r.TTL) != 15*time.Minute {
					t.Fatalf("ttl %v", time.Duration(r.TTL))
				}
				return
			}
			if err == nil || !strings.Contains(err.Message, tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
