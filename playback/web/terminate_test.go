package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/playback/web/webtest"
)

// TestTerminateThroughPlayback (issue 13 §1): the playback server relays a
// termination to the real CA with the reader's own token and the
// session's host and tier from its metadata. An engineer is refused (403)
// and no order leaves the CA; the auditor's order names the session, its
// host and the reason, and the CA's audit chain has it; a finished session
// cannot be terminated (409).
func TestTerminateThroughPlayback(t *testing.T) {
	st := webtest.New(t)
	live := st.StartLive(t, webtest.Session{ID: "s-term", User: "dave", Tier: "production",
		Steps: []webtest.Step{{After: 10 * time.Millisecond, Output: "working\r\n"}}})
	post := func(token string, body any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, st.URL+"/api/sessions/s-term/terminate", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := st.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	reason := map[string]any{"reason": "INC-7 data leaving"}
	// The live session reaches the server first.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := post(st.EngineerToken, reason)
		if code == http.StatusForbidden {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("engineer's terminate answered %d, want 403", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var code int
	var out map[string]any
	for {
		if code, out = post(st.AuditorToken, reason); code != http.StatusNotFound || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	orders, _, _ := st.CA.Authority.TerminateOrdersSince(0, []string{"production"})
	if code != http.StatusOK || out["by"] != webtest.Auditor {
		t.Fatalf("auditor's terminate: %d %v", code, out)
	}
	if len(orders) != 1 || orders[0].SessionID != "s-term" || orders[0].Reason != "INC-7 data leaving" || orders[0].By != webtest.Auditor || orders[0].Host == "" {
		t.Fatalf("orders %+v", orders)
	}
	evs, err := st.CA.Store.Audit(context.Background(), store.AuditFilter{Type: api.EventSessionTerminate})
	if err != nil {
		t.Fatal(err)
	}
	var ok, refused bool
	for _, e := range evs {
		ok = ok || e.Actor == webtest.Auditor && e.Subject == "s-term" && e.Outcome == "ok" && e.Details["user"] == "dave"
		refused = refused || e.Actor == webtest.Engineer && e.Outcome == "refused"
	}
	if !ok {
		t.Errorf("no CA audit event of the auditor's termination: %+v", evs)
	}
	if refused {
		// The engineer is stopped by the playback server (auditors only)
		// before the CA is asked.
		t.Logf("the CA also audited the engineer's attempt")
	}
	live.Finish(t)
	for {
		if code, _ = post(st.AuditorToken, reason); code == http.StatusConflict || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != http.StatusConflict {
		t.Errorf("terminate of a finished session answered %d, want 409", code)
	}
}
