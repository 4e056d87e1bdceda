package store

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// FuzzAuditJSONRoundTrip: whatever text an event carries, the hash
// computed at append time must equal the hash recomputed from the stored
// JSON, or VerifyAudit would report honest records as edited.
func FuzzAuditJSONRoundTrip(f *testing.F) {
	f.Add("alice", "login", "bad password", "k", "v", int64(1795000000123456789), uint64(42))
	f.Add("ev\xffil", "x", "\u2028<&>\"", "\xfe", "\xc3", int64(0), uint64(0))
	f.Add("", "cert.issue", "", "", "", int64(-1), ^uint64(0))
	f.Fuzz(func(t *testing.T, actor, typ, reason, dk, dv string, nanos int64, serial uint64) {
		ev := AuditEvent{Seq: 7, Time: time.Unix(0, nanos).In(time.FixedZone("X", 5*3600+1800)), Type: typ, Actor: actor,
			Reason: reason, Serial: serial, Outcome: OutcomeOK, Details: map[string]string{dk: dv, dk + "\x80": dv},
			PrevHash: "00"}
		sanitizeAudit(&ev)
		ev.Time = ev.Time.UTC()
		ev.Hash = AuditHash(&ev)
		raw, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		var back AuditEvent
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		if got := AuditHash(&back); got != ev.Hash {
			t.Fatalf("hash changed across JSON: %s → %s\n%+v\n%+v", ev.Hash, got, ev, back)
		}
		if !reflect.DeepEqual(back, ev) {
			t.Fatalf("event changed across JSON:\n%+v\n%+v", ev, back)
		}
	})
}

// FuzzAuditHashInjective: moving bytes from one field to the next must
// change the hash (the length prefixes are what guarantee it).
func FuzzAuditHashInjective(f *testing.F) {
	f.Add("ab", "c", "d")
	f.Add("", "x", "")
	f.Add("k", "=", "v")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		if b == "" {
			return
		}
		tm := time.Unix(1, 0)
		e1 := AuditEvent{Time: tm, Type: "t", Actor: a, Subject: b + c}
		e2 := AuditEvent{Time: tm, Type: "t", Actor: a + b, Subject: c}
		if AuditHash(&e1) == AuditHash(&e2) {
			t.Fatalf("Actor/Subject split %q|%q and %q|%q hash alike", a, b+c, a+b, c)
		}
		d1 := AuditEvent{Time: tm, Type: "t", Details: map[string]string{a: b + c}}
		d2 := AuditEvent{Time: tm, Type: "t", Details: map[string]string{a + b: c}}
		if AuditHash(&d1) == AuditHash(&d2) {
			t.Fatalf("Details split %q:%q and %q:%q hash alike", a, b+c, a+b, c)
		}
	})
}

// FuzzKeyIDIndexKey: the index key round-trips, and a prefix scan for one
// key id never returns another's entries.
func FuzzKeyIDIndexKey(f *testing.F) {
	f.Add("alice", "alice2", uint64(5), []byte{5, 'a', 'l', 'i', 'c', 'e', 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add("", "\x00", uint64(0), []byte{0xff, 0xff})
	f.Add("host:web1", "host:web", ^uint64(0), []byte{})
	f.Fuzz(func(t *testing.T, a, b string, serial uint64, junk []byte) {
		k := keyIDIndexKey(a, serial)
		ga, gs, ok := parseKeyIDIndexKey(k)
		if !ok || ga != a || gs != serial {
			t.Fatalf("round trip of (%q, %d) gave (%q, %d, %v)", a, serial, ga, gs, ok)
		}
		if a != b && bytes.HasPrefix(keyIDIndexKey(b, serial), keyIDPrefix(a)) {
			t.Fatalf("entry for %q matches the prefix of %q", b, a)
		}
		if id, s, ok := parseKeyIDIndexKey(junk); ok && !bytes.Equal(keyIDIndexKey(id, s), junk) {
			t.Fatalf("parse(%x) = (%q, %d) does not re-encode to the input", junk, id, s)
		}
	})
}
