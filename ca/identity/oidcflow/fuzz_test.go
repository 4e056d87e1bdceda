package oidcflow

import (
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzCallback: whatever query reaches the redirect listener, a result is
// produced only for the right state, and a code only when one was sent.
func FuzzCallback(f *testing.F) {
	const state = "STATE0123456789ABCDEFGHIJK"
	for _, q := range []string{
		"state=" + state + "&code=abc",
		"state=" + state + "&error=access_denied&error_description=no",
		"state=wrong&code=abc",
		"code=abc",
		"state=" + state + "&state=wrong&code=x",
		"state=%ZZ&code=1",
		"",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		cb := &callback{state: state, done: make(chan callbackResult, 1)}
		req := httptest.NewRequest("GET", "http://127.0.0.1/callback", nil)
		req.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		cb.ServeHTTP(rec, req)
		q, _ := url.ParseQuery(rawQuery)
		select {
		case res := <-cb.done:
			if q.Get("state") != state {
				t.Fatalf("query %q with state %q produced a result", rawQuery, q.Get("state"))
			}
			if res.err == nil && (res.code == "" || res.code != q.Get("code")) {
				t.Fatalf("query %q gave code %q", rawQuery, res.code)
			}
		default:
			if q.Get("state") == state {
				t.Fatalf("query %q with the right state produced no result (status %d)", rawQuery, rec.Code)
			}
		}
	})
}
