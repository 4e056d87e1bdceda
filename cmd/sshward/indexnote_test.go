package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestSearchSaysWhatItDidNotCover: while the playback server's search
// index catches up (after a start with an index to rebuild), its answer
// to a search carries index_note; `sshward sessions --grep` passes it on
// (stderr) instead of an empty list that looks complete. The answer is
// the real server's shape, which playback.TestColdStartServesBeforeCatchUp
// checks against a real store held mid catch-up; here a stand-in serves
// it, since building a held-back index through the whole stack takes a
// restart webtest does not do.
func TestSearchSaysWhatItDidNotCover(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/sessions" || r.URL.Query().Get("q") != "needle" {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"sessions":[],"index_pending":120,"index_note":"not indexed yet, so not searched: 120 recordings; search again shortly"}`))
	}))
	defer srv.Close()
	p := &playbackClient{base: srv.URL, token: "t", hc: srv.Client()}
	list, notes, err := p.listSessions(context.Background(), url.Values{"q": {"needle"}}, 100)
	if err != nil || len(list) != 0 {
		t.Fatalf("listSessions: %v, %d sessions", err, len(list))
	}
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "search incomplete: not indexed yet, so not searched: 120 recordings") {
		t.Errorf("notes %q, want the server's index note", notes)
	}
}
