package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func testSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTerminateOrderRoundTrip: an order survives the stream's JSON and
// verifies; any field changed after signing, another key, another host,
// or a time outside its window does not.
func TestTerminateOrderRoundTrip(t *testing.T) {
	ca, other := testSigner(t), testSigner(t)
	now := time.Unix(1_900_000_000, 123)
	o := TerminateOrder{SessionID: "abc-1", Host: "web1", Tier: TierProduction, By: "audrey", Reason: "INC-1",
		IssuedAt: now, Expires: now.Add(TerminateOrderTTL), Nonce: "n"}
	if err := o.Sign(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	line, err := json.Marshal(RevocationEvent{Type: EventTerminate, Seq: 7, Terminate: &o})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := DecodeRevocationEvent(line)
	if err != nil {
		t.Fatal(err)
	}
	got := *ev.Terminate
	if err := got.Verify(ca.PublicKey(), "web1", now.Add(time.Minute)); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	tests := []struct {
		name   string
		change func(o *TerminateOrder)
		key    ssh.PublicKey
		host   string
		at     time.Time
		want   error
	}{
		{"reason changed", func(o *TerminateOrder) { o.Reason = "other" }, ca.PublicKey(), "web1", now, ErrOrderSignature},
		{"session changed", func(o *TerminateOrder) { o.SessionID = "xyz-1" }, ca.PublicKey(), "web1", now, ErrOrderSignature},
		{"expiry stretched", func(o *TerminateOrder) { o.Expires = o.Expires.Add(time.Hour) }, ca.PublicKey(), "web1", now, ErrOrderSignature},
		{"another key", nil, other.PublicKey(), "web1", now, ErrOrderSignature},
		{"no key", nil, nil, "web1", now, ErrOrderSignature},
		{"another host", nil, ca.PublicKey(), "db1", now, ErrOrderHost},
		{"expired", nil, ca.PublicKey(), "web1", now.Add(TerminateOrderTTL), ErrOrderExpired},
		{"from the future", nil, ca.PublicKey(), "web1", now.Add(-2 * time.Minute), ErrOrderExpired},
		{"signature garbage", func(o *TerminateOrder) { o.Signature = "!!" }, ca.PublicKey(), "web1", now, ErrOrderSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := got
			if tt.change != nil {
				tt.change(&c)
			}
			if err := c.Verify(tt.key, tt.host, tt.at); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := DecodeRevocationEvent([]byte(`{"type":"terminate","seq":1}`)); err == nil {
		t.Errorf("a terminate event without an order decoded")
	}
}

// FuzzTerminateEvent: no stream line makes the decoder or Verify panic, and
// nothing unsigned verifies.
func FuzzTerminateEvent(f *testing.F) {
	f.Add([]byte(`{"type":"terminate","seq":1,"terminate":{"session_id":"a-1","host":"h","signature":"AAAA"}}`))
	f.Add([]byte(`{"type":"hello","seq":0,"flags":{"rules":[]}}`))
	key := testSigner(f).PublicKey()
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := DecodeRevocationEvent(line)
		if err != nil || ev.Terminate == nil {
			return
		}
		if ev.Terminate.Verify(key, "", time.Now()) == nil {
			t.Fatalf("an order not signed by the key verified: %s", line)
		}
	})
}
