package store

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRecordJSONMatchesEncodingJSON: the reflection-free encoding of the
// records written on every issuance is byte for byte what encoding/json
// writes, for full, empty and hostile values.
func TestRecordJSONMatchesEncodingJSON(t *testing.T) {
	now := time.Unix(1_700_000_000, 123_456_789)
	certs := []CertRecord{
		{},
		{Serial: 1<<63 - 1, KeyID: "alice@local tier=staging req=- serial=1", Kind: CertKindUser, Tier: "staging", Identity: "alice",
			Principals: []string{"alice", "deploy"}, ValidAfter: now.UTC(), ValidBefore: now.Add(time.Hour), IssuedAt: now.In(time.FixedZone("X", -5*3600)),
			PublicKeyFP: "SHA256:abc+/", RequestID: "req-1", ClientAddr: "127.0.0.1"},
		{Serial: 5, KeyID: "<bad>\xff\u2028\"\\\n", Kind: "host", Principals: []string{}, Identity: "\x00"},
	}
	for i := range certs {
		got, ok := certs[i].appendJSON(nil)
		if want := mustJSON(t, &certs[i]); !ok || !bytes.Equal(got, want) {
			t.Errorf("CertRecord %d:\n got %s (ok=%v)\nwant %s", i, got, ok, want)
		}
	}
	evs := []AuditEvent{
		{},
		{Seq: 42, Time: now.UTC(), Type: "cert.issue", Actor: "alice", Subject: "alice", Tier: "staging", Serial: 99, KeyID: "k",
			RequestID: "r", ClientAddr: "::1", Outcome: OutcomeOK, Reason: "why", Details: map[string]string{"principals": "a,b", "key": "SHA256:x", "valid_before": "2023"},
			PrevHash: "00ff", Hash: "ff00"},
		{Type: "login", Outcome: OutcomeRefused, Details: map[string]string{}, Reason: "<&>\t\xc3"},
	}
	for i := range evs {
		got, ok := appendAuditJSON(nil, &evs[i])
		if want := mustJSON(t, &evs[i]); !ok || !bytes.Equal(got, want) {
			t.Errorf("AuditEvent %d:\n got %s (ok=%v)\nwant %s", i, got, ok, want)
		}
	}
	// A time encoding/json refuses: marshalRecord reports its error.
	bad := CertRecord{Serial: 1, ValidBefore: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := marshalRecord(&bad); err == nil {
		t.Error("a year-10000 time was encoded")
	}
}

func FuzzRecordJSON(f *testing.F) {
	f.Add("alice", "k\xff", "staging", "<x>", uint64(1), int64(1_700_000_000), int64(5))
	f.Fuzz(func(t *testing.T, a, b, c, d string, n uint64, sec, nsec int64) {
		tm := time.Unix(sec%(1<<36), nsec)
		cr := CertRecord{Serial: n, KeyID: a, Kind: b, Tier: c, Identity: d, Principals: []string{a, d}, ValidAfter: tm, ValidBefore: tm.UTC(),
			IssuedAt: tm, PublicKeyFP: b, RequestID: c, ClientAddr: d}
		ev := AuditEvent{Seq: n, Time: tm, Type: a, Actor: b, Subject: c, Tier: d, Serial: n, KeyID: a, RequestID: b, ClientAddr: c,
			Outcome: d, Reason: a, Details: map[string]string{a: b, c: d}, PrevHash: b, Hash: c}
		for _, v := range []any{&cr, &ev} {
			want, werr := json.Marshal(v)
			got, gerr := marshalRecord(v)
			if (werr == nil) != (gerr == nil) || !bytes.Equal(got, want) {
				t.Fatalf("%T:\n got %s (%v)\nwant %s (%v)", v, got, gerr, want, werr)
			}
		}
	})
}
