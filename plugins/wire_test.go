package plugins

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/store"
)

// fakePolicy answers with d/err and reports the ctx error it saw.
type fakePolicy struct {
	d       ca.PolicyDecision
	err     error
	block   bool
	panics  bool
	got     chan ca.AccessRequestInfo
	ctxDone chan error
}

func (f *fakePolicy) Review(ctx context.Context, r ca.AccessRequestInfo) (ca.PolicyDecision, error) {
	if f.got != nil {
		f.got <- r
	}
	if f.panics {
		panic("boom")
	}
	if f.block {
		<-ctx.Done()
		f.ctxDone <- ctx.Err()
		return ca.PolicyDecision{}, ctx.Err()
	}
	return f.d, f.err
}

type fakeNotifier struct {
	got chan store.AuditEvent
	err error
}

func (f *fakeNotifier) Notify(_ context.Context, ev store.AuditEvent) error {
	f.got <- ev
	return f.err
}

// inProcess serves srv with go-plugin's in-process gRPC test transport and
// returns the host's stub.
func inProcess(t *testing.T, srv *server) stub {
	t.Helper()
	c, _ := plugin.TestPluginGRPCConn(t, false, plugin.PluginSet{string(srv.kind): &grpcPlugin{srv: srv}})
	// Close asks the server to stop (go-plugin's controller), like a host does.
	t.Cleanup(func() { c.Close() })
	raw, err := c.Dispense(string(srv.kind))
	if err != nil {
		t.Fatal(err)
	}
	return raw.(stub)
}

var testRequest = ca.AccessRequestInfo{
	ID: "REQ-1", Phase: "create", Requester: "alice", RequesterGroups: []string{"oncall"},
	Tier: "break-glass", Reason: "INC-4711 db down", Principals: []string{"root"}, TTL: 10 * time.Minute,
	CreatedAt: time.Date(2026, 11, 21, 9, 30, 0, 0, time.UTC),
}

func TestReviewOverGRPC(t *testing.T) {
	tests := []struct {
		name     string
		policy   fakePolicy
		want     ca.PolicyDecision
		wantCode codes.Code // codes.OK: no error
	}{
		{name: "allow", policy: fakePolicy{d: ca.PolicyDecision{Reason: "on call"}}, want: ca.PolicyDecision{Reason: "on call"}},
		{name: "deny", policy: fakePolicy{d: ca.PolicyDecision{Deny: true, Reason: "no ticket"}}, want: ca.PolicyDecision{Deny: true, Reason: "no ticket"}},
		{name: "extra approvals", policy: fakePolicy{d: ca.PolicyDecision{ExtraApprovals: 2}}, want: ca.PolicyDecision{ExtraApprovals: 2}},
		{name: "plugin error", policy: fakePolicy{err: errors.New("schedule unreadable")}, wantCode: codes.Unknown},
		{name: "panic is contained", policy: fakePolicy{panics: true}, wantCode: codes.Internal},
		{name: "negative approvals refused at the plugin", policy: fakePolicy{d: ca.PolicyDecision{ExtraApprovals: -1}}, wantCode: codes.Internal},
		{name: "too many approvals refused", policy: fakePolicy{d: ca.PolicyDecision{ExtraApprovals: MaxExtraApprovals + 1}}, wantCode: codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.policy.got = make(chan ca.AccessRequestInfo, 1)
			s := inProcess(t, &server{kind: KindApproval, policy: &tt.policy})
			if k, err := s.info(t.Context()); err != nil || k != KindApproval {
				t.Fatalf("info = %q, %v", k, err)
			}
			d, err := s.review(t.Context(), testRequest)
			if got := <-tt.policy.got; !reflect.DeepEqual(got, testRequest) {
				t.Errorf("plugin saw %+v, want %+v", got, testRequest)
			}
			if tt.wantCode != codes.OK {
				if status.Code(err) != tt.wantCode {
					t.Fatalf("err = %v, want code %s", err, tt.wantCode)
				}
				return
			}
			if err != nil || d != tt.want {
				t.Fatalf("review = %+v, %v; want %+v", d, err, tt.want)
			}
		})
	}
}

func TestReviewContextReachesPlugin(t *testing.T) {
	p := &fakePolicy{block: true, got: make(chan ca.AccessRequestInfo, 1), ctxDone: make(chan error, 1)}
	s := inProcess(t, &server{kind: KindApproval, policy: p})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { _, err := s.review(ctx, testRequest); errc <- err }()
	<-p.got
	cancel()
	select {
	case err := <-p.ctxDone:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("plugin ctx ended with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancellation did not reach the plugin")
	}
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("review err = %v, want Canceled", err)
	}
}

func TestNotifyOverGRPC(t *testing.T) {
	ev := store.AuditEvent{Seq: 7, Time: time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC), Type: "cert.issue", Actor: "alice",
		Tier: "production", Serial: 42, Outcome: "ok", Details: map[string]string{"k": "v"}, PrevHash: "aa", Hash: "bb"}
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
	}{
		{name: "delivered"},
		{name: "receiver down", err: errors.New("webhook: 503"), wantCode: codes.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &fakeNotifier{got: make(chan store.AuditEvent, 1), err: tt.err}
			s := inProcess(t, &server{kind: KindNotifier, notifier: n})
			err := s.notify(t.Context(), ev)
			if got := <-n.got; !reflect.DeepEqual(got, ev) {
				t.Errorf("plugin got %+v, want %+v", got, ev)
			}
			if status.Code(err) != tt.wantCode {
				t.Fatalf("err = %v, want code %s", err, tt.wantCode)
			}
			if tt.err != nil && !strings.Contains(err.Error(), "webhook: 503") {
				t.Errorf("err %q lost the plugin's text", err)
			}
		})
	}
}

func TestWrongServiceIsUnimplemented(t *testing.T) {
	s := inProcess(t, &server{kind: KindNotifier, notifier: &fakeNotifier{got: make(chan store.AuditEvent, 1)}})
	if _, err := s.review(t.Context(), testRequest); status.Code(err) != codes.Unimplemented {
		t.Fatalf("review on a notifier: %v, want Unimplemented", err)
	}
}

func TestDecodeRefusesBadMessages(t *testing.T) {
	tests := []struct {
		name string
		fn   func([]byte) error
		in   string
	}{
		{"event not JSON", func(b []byte) error { _, err := DecodeEvent(b); return err }, `{`},
		{"event without seq", func(b []byte) error { _, err := DecodeEvent(b); return err }, `{"type":"login"}`},
		{"event without type", func(b []byte) error { _, err := DecodeEvent(b); return err }, `{"seq":3}`},
		{"request without id", func(b []byte) error { _, err := DecodeRequest(b); return err }, `{"tier":"x"}`},
		{"decision negative", func(b []byte) error { _, err := DecodeDecision(b); return err }, `{"extra_approvals":-1}`},
		{"decision too many", func(b []byte) error { _, err := DecodeDecision(b); return err }, `{"extra_approvals":11}`},
		{"decision long reason", func(b []byte) error { _, err := DecodeDecision(b); return err }, `{"reason":"` + strings.Repeat("x", MaxReasonBytes+1) + `"}`},
		{"encode bad utf8", func(b []byte) error { _, err := EncodeDecision(ca.PolicyDecision{Reason: string(b)}); return err }, "\xff"},
		{"decision wrong type", func(b []byte) error { _, err := DecodeDecision(b); return err }, `{"deny":"yes"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.fn([]byte(tt.in)); err == nil {
				t.Fatalf("decoded %q without error", tt.in)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	ev := store.AuditEvent{Seq: 1, Time: time.Unix(1700000000, 5).UTC(), Type: "request.create", RequestID: "REQ-1", Outcome: "ok", Hash: "h"}
	b, err := EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeEvent(b); err != nil || !reflect.DeepEqual(got, ev) {
		t.Fatalf("event round trip = %+v, %v", got, err)
	}
	b, err = EncodeRequest(testRequest)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeRequest(b); err != nil || !reflect.DeepEqual(got, testRequest) {
		t.Fatalf("request round trip = %+v, %v", got, err)
	}
	d := ca.PolicyDecision{Deny: true, Reason: "ticket pattern ^INC-\\d+ not matched", ExtraApprovals: 1}
	b, err = EncodeDecision(d)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeDecision(b); err != nil || got != d {
		t.Fatalf("decision round trip = %+v, %v", got, err)
	}
}

func FuzzDecodeDecision(f *testing.F) {
	f.Add([]byte(`{"deny":true,"reason":"no","extra_approvals":0}`))
	f.Add([]byte(`{"extra_approvals":3}`))
	f.Add([]byte(`{"extra_approvals":-3}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDecision(b)
		if err != nil {
			return
		}
		if d.ExtraApprovals < 0 || d.ExtraApprovals > MaxExtraApprovals || len(d.Reason) > MaxReasonBytes {
			t.Fatalf("accepted out-of-bounds decision %+v", d)
		}
		b2, err := EncodeDecision(d)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", d, err)
		}
		if d2, err := DecodeDecision(b2); err != nil || d2 != d {
			t.Fatalf("round trip %+v → %+v, %v", d, d2, err)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"seq":1,"time":"2026-11-21T09:00:00Z","type":"login","outcome":"ok","details":{"a":"b"},"prev_hash":"","hash":"x"}`))
	f.Add([]byte(`{"seq":18446744073709551615,"type":"t"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeEvent(b)
		if err != nil {
			return
		}
		// Compare encodings: JSON does not tell an empty map from none.
		b2, err := EncodeEvent(ev)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		ev2, err := DecodeEvent(b2)
		if err != nil {
			t.Fatalf("decode own encoding %s: %v", b2, err)
		}
		if b3, _ := EncodeEvent(ev2); !bytes.Equal(b2, b3) {
			t.Fatalf("round trip %s → %s", b2, b3)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"id":"REQ-1","phase":"create","requester":"alice","tier":"break-glass","reason":"INC-1","ttl":600000000000,"created_at":"2026-11-21T09:00:00Z"}`))
	f.Add([]byte(`{"id":"x","requester_groups":null,"approvers":["bob"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			return
		}
		b2, err := EncodeRequest(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := DecodeRequest(b2)
		if err != nil {
			t.Fatalf("decode own encoding %s: %v", b2, err)
		}
		if b3, _ := EncodeRequest(r2); !bytes.Equal(b2, b3) {
			t.Fatalf("round trip %s → %s", b2, b3)
		}
	})
}
