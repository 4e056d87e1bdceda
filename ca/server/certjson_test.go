package server

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
)

// TestCertResponseJSONMatchesEncodingJSON: the issuance answer is byte for
// byte what writeJSON (encoding/json) writes, headers included.
func TestCertResponseJSONMatchesEncodingJSON(t *testing.T) {
	now := time.Unix(1_700_000_000, 5)
	for i, r := range []api.CertResponse{
		{},
		{Certificate: "ssh-ed25519-cert-v01@openssh.com AAAA+/=\n", Serial: 1<<63 - 1, KeyID: "alice@local tier=staging req=- serial=9",
			Tier: "staging", Principals: []string{"alice", "deploy"}, ValidAfter: now.UTC(), ValidBefore: now.Add(time.Hour)},
		{KeyID: "<\xff\u2028>", Principals: []string{}, ValidAfter: now.In(time.FixedZone("z", 7200))},
		{ValidBefore: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, // encoding/json refuses: both answer 500
	} {
		want := httptest.NewRecorder()
		writeJSON(want, 200, &r)
		got := httptest.NewRecorder()
		writeCertResponse(got, &r)
		if got.Code != want.Code || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
			t.Errorf("response %d:\n got %d %s\nwant %d %s", i, got.Code, got.Body, want.Code, want.Body)
		}
		for _, h := range []string{"Content-Type", "Content-Length"} {
			if got.Header().Get(h) != want.Header().Get(h) {
				t.Errorf("response %d: %s %q, want %q", i, h, got.Header().Get(h), want.Header().Get(h))
			}
		}
		if i == 1 {
			var back api.CertResponse
			if err := json.Unmarshal(got.Body.Bytes(), &back); err != nil || back.Serial != r.Serial || !back.ValidBefore.Equal(r.ValidBefore) {
				t.Errorf("round trip: %+v, %v", back, err)
			}
		}
	}
}
